// Minimal typings for the parts of node-ipc 12.0.0 used by src/mgmt/ipc.ts.
declare module 'node-ipc' {
  interface IpcConfig {
    id: string;
    silent: boolean;
    logInColor: boolean;
    logger: (...a: unknown[]) => void;
    maxConnections: number;
    maxRetries: number | boolean;
    stopRetrying: boolean;
    [k: string]: unknown;
  }
  interface IpcEmitter {
    on(event: string, fn: (...a: any[]) => void): this;
    emit(event: string, data?: unknown): void;
  }
  interface IpcServer {
    on(event: string, fn: (...a: any[]) => void): this;
    emit(socket: unknown, event: string, data?: unknown): void;
    start(): void;
    stop(): void;
  }
  export class IPCModule {
    config: IpcConfig;
    server: IpcServer;
    of: Record<string, IpcEmitter>;
    serve(path: string, cb: () => void): void;
    connectTo(id: string, path: string, cb: () => void): void;
    disconnect(id: string): void;
  }
  const singleton: IPCModule;
  export default singleton;
}
