/** Injection tokens of delta-apply (values, not classes: the config object and the statfs function). */
export const DELTA_APPLY_CONFIG = Symbol('DELTA_APPLY_CONFIG');
export const STAT_FS = Symbol('STAT_FS');
