export * from './errors.js';
export * from './nbd.constants.js';
export { ByteReader, BYTE_READER_HIGH_WATER, readerForSocket, type ReaderFlowControl } from './byte.reader.js';
export { decodeRequestHeader, encodeRequestHeader, type NbdRequestHeader } from './request.codec.js';
export {
  decodeBlockStatusPayload,
  decodeErrorPayload,
  decodeSimpleReply,
  decodeStructuredHeader,
  encodeBlockStatusChunk,
  encodeErrorChunk,
  encodeNoneChunk,
  encodeOffsetDataHead,
  encodeOffsetHoleChunk,
  encodeSimpleReply,
  encodeStructuredHeader,
  type BlockExtent,
  type ErrorChunk,
  type SimpleReplyHeader,
  type StructuredReplyHeader,
} from './reply.codec.js';
export { validateRequest, type Rejection, type TransmissionContext } from './request.validator.js';
export { AllocationMap } from './allocation.map.js';
export { RangeLock } from './range.lock.js';
export { WriteKind, type ExportBackend, type NbdExport } from './export.backend.js';
export { FileExportBackend, type FileExportBackendOptions, type InitialAllocation } from './file-export.backend.js';
export { MemoryExportBackend } from './memory-export.backend.js';
export {
  HandshakeNegotiator,
  type BlockSizeLimits,
  type ExportDirectory,
  type NegotiableExport,
  type NegotiatedSession,
} from './handshake.negotiator.js';
export { ClientHandshake, type ClientHandshakeOptions, type ClientSession } from './client.handshake.js';
export { type CommandFailure } from './command.executor.js';
export {
  NbdServer,
  type NbdAddress,
  type NbdListenOptions,
  type NbdServerEvents,
  type NbdServerOptions,
  type NbdSessionInfo,
} from './nbd.server.js';
export { NbdClient, type NbdClientOptions, type NbdConnectTarget, type NbdRawRequest } from './nbd.client.js';
