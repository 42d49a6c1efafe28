export * from './rpc-exception.filter.js';
export * from './config.loader.js';
export * from './service.bootstrap.js';
export * from './units.js';
export * from './external-request.deserializer.js';
export * from './atomic-file.writer.js';
