import { IsInt, IsOptional, IsString, Min } from 'class-validator';
import { describe, expect, it } from 'vitest';
import { ValidationError } from './errors.js';
import { validateDto } from './validate.js';

class SampleDto {
  @IsString()
  name!: string;

  @IsOptional()
  @IsInt()
  @Min(1)
  window: number = 8;
}

describe('validateDto', () => {
  it('keeps defaults that the input leaves out', () => {
    const dto = validateDto(SampleDto, { name: 'a' });
    expect(dto).toBeInstanceOf(SampleDto);
    expect(dto.window).toBe(8);
  });

  it('lists every bad key, including unknown ones', () => {
    let caught: unknown;
    try {
      validateDto(SampleDto, { name: 3, window: 0, typo: true });
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(ValidationError);
    const problems = (caught as ValidationError).problems.join('\n');
    expect(problems).toMatch(/name/);
    expect(problems).toMatch(/window/);
    expect(problems).toMatch(/typo/);
  });

  it('rejects a body that is not an object', () => {
    expect(() => validateDto(SampleDto, [1, 2])).toThrow(ValidationError);
  });
});
