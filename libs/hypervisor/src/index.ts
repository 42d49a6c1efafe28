export * from './hypervisor.driver.js';
