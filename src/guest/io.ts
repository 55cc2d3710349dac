/**
 * The guest's inputs and outputs as the controller sees them, and the seam where they flow.
 * Every external input the guest will ever see passes through an InputPipeline: the Replicator
 * (src/replication), which on a board alone delivers straight through, and in a pair sequences each
 * input, clones it to the partner and holds replies until the partner has acknowledged it.
 */

/** An input to the guest. `clientPort` is the client's identity on the private wire (see ClientMap). */
export type GuestInput =
  | { kind: 'request'; clientPort: number; payload: Buffer }
  | { kind: 'auth-reply'; payload: Buffer };

/** An output of the guest. */
export type GuestOutput =
  | { kind: 'reply'; clientPort: number; payload: Buffer }
  | { kind: 'auth-query'; payload: Buffer };

/** Where inputs go in, and where the guest's outputs come out. */
export interface InputPipeline {
  /** An external input arrived (a client request or the AUTH service's answer). */
  submit(input: GuestInput): void;
  /**
   * Optional: asked before a new client request is given an identity. False while a capped queue
   * is full: the pipeline has counted the drop, and the caller drops the datagram.
   */
  admit?(): boolean;
  /** The local guest produced an output. */
  onGuestOutput(output: GuestOutput): void;
}

/** Delivers inputs to the local guest. */
export interface InputSink {
  deliver(input: GuestInput): boolean;
  /**
   * Flow control (optional): false while the guest has as many requests unprocessed as it can be
   * trusted to buffer; whenRoom() calls back once it has worked through enough of them.
   * `guestBlocked`: the guest waits for an AUTH answer further down the queue, so what it was handed
   * cannot be confirmed before it gets that answer: the bound is then what it can buffer at most.
   */
  hasRoom?(guestBlocked?: boolean): boolean;
  /**
   * True while the guest is still working through requests it was handed (some unconfirmed, its
   * count moving). An AUTH answer it has not asked for yet is held while it is: it asks once it
   * reaches the REG, which may sit behind hundreds of requests in its buffer.
   */
  working?(): boolean;
  whenRoom?(fn: () => void): void;
}

/** Lets outputs leave the board: replies to clients, queries to external services. */
export interface OutputSink {
  release(output: GuestOutput): void;
}
