// Shared with disk-transfer's persisted state: one implementation, in @wanmig/service.
export { syncDirectory, writeFileAtomic } from '@wanmig/service';
