/**
 * `roaring` is CommonJS. Under NodeNext its named exports are not reliably visible to ESM
 * (cjs-module-lexer cannot see through its loader), so we take the default export, which is
 * `module.exports`, and re-export the class from here so the rest of the lib has one import.
 */
import roaring from 'roaring';

export const RoaringBitmap32 = roaring.RoaringBitmap32;
export type RoaringBitmap32 = InstanceType<typeof roaring.RoaringBitmap32>;
