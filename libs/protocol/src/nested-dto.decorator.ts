import 'reflect-metadata';
import { Type } from 'class-transformer';
import { IsObject, ValidateNested } from 'class-validator';

type DtoClass = new () => object;

/** The nested DTO class of each decorated property, per prototype (read by dtoSchema). */
const nestedTypes = new WeakMap<object, Map<string, () => DtoClass>>();

/**
 * A property that holds another DTO: a JSON object (not an array, not a string), turned into an instance of `type()`
 * by validateDto and validated with that class's rules, unknown keys refused there too. dtoSchema states it as the
 * nested class's schema. Use it instead of a bare `@ValidateNested()`, which dtoSchema cannot resolve.
 */
export function NestedDto(type: () => DtoClass): PropertyDecorator {
  const isObject = IsObject();
  const nested = ValidateNested();
  const transform = Type(type);
  return (target: object, property: string | symbol) => {
    isObject(target, property);
    nested(target, property);
    transform(target, property);
    if (typeof property !== 'string') return;
    let types = nestedTypes.get(target);
    if (types === undefined) nestedTypes.set(target, (types = new Map<string, () => DtoClass>()));
    types.set(property, type);
  };
}

/** The class a `@NestedDto` property of `dto` holds (inherited properties included), or undefined. */
export function nestedDtoType(dto: DtoClass, property: string): DtoClass | undefined {
  for (
    let proto: object | null = dto.prototype as object;
    proto !== null;
    proto = Object.getPrototypeOf(proto) as object | null
  ) {
    const type = nestedTypes.get(proto)?.get(property);
    if (type !== undefined) return type();
  }
  return undefined;
}
