/** Injection tokens of delta-apply (values, not classes: the config object, the statfs function, the driver). */
export const DELTA_APPLY_CONFIG = Symbol('DELTA_APPLY_CONFIG');
export const STAT_FS = Symbol('STAT_FS');
/** The HypervisorDriver that starts and resumes destination VMs (tests inject a fake). */
export const HYPERVISOR_DRIVER = Symbol('HYPERVISOR_DRIVER');
