export * from './errors.js';
export * from './token-bucket.js';
export * from './watermark.store.js';
export * from './frame.sink.js';
export * from './stream.options.js';
export * from './stream.sender.js';
export * from './stream.receiver.js';
