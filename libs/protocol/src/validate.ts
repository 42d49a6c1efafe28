import { plainToInstance } from 'class-transformer';
import { validateSync, type ValidationError as ClassValidationError } from 'class-validator';
import { ValidationError } from './errors.js';

type Ctor<T> = new () => T;

/**
 * Turns an untrusted plain object into a validated DTO instance, or throws ValidationError listing
 * every bad key. Unknown keys are rejected so a typo never silently falls back to a default.
 */
export function validateDto<T extends object>(dto: Ctor<T>, plain: unknown, what = dto.name): T {
  if (plain === null || typeof plain !== 'object' || Array.isArray(plain)) {
    throw new ValidationError(['body must be a JSON object'], what);
  }
  const instance = plainToInstance(dto, plain, { exposeDefaultValues: true });
  const errors = validateSync(instance, { whitelist: true, forbidNonWhitelisted: true });
  if (errors.length > 0) throw new ValidationError(flatten(errors), what);
  return instance;
}

function flatten(errors: ClassValidationError[], prefix = ''): string[] {
  return errors.flatMap((e) => {
    const path = prefix ? `${prefix}.${e.property}` : e.property;
    const own = Object.values(e.constraints ?? {}).map((text) => `${path}: ${text}`);
    return [...own, ...flatten(e.children ?? [], path)];
  });
}
