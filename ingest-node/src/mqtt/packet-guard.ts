// Reads the MQTT framing of a connection's incoming bytes (only the fixed headers:
// packet type, flags, remaining length) to see a PUBLISH too large to store before
// mqtt-packet has buffered it. mqtt-packet has no size limit: it would collect the
// whole packet (up to 256 MiB) before the source could refuse it. MQTT 5 brokers
// honour the Maximum Packet Size Landfall sends; MQTT 3.1.1 has no such thing, so
// this is how its connections are bounded.

/** A PUBLISH whose record would be larger than the bound. */
export interface OversizePublish {
  readonly qos: number;
  /** Record bytes (2 + topic + payload) the packet announces. */
  readonly recordBytes: number;
}

const PUBLISH = 3;

/**
 * Fed every chunk read from one connection, in order. Calls `onTooLarge` at
 * the fixed header of each PUBLISH over `recordBytesMax`; when it returns true
 * (the caller closes the connection) the guard ignores everything after, else
 * it goes on past that packet. A malformed length (more than 4 bytes) stops
 * it too: mqtt-packet reports that itself.
 */
export class PacketSizeGuard {
  readonly #recordBytesMax: number;
  readonly #onTooLarge: (p: OversizePublish) => boolean;
  /** 0: at a packet's first byte; 1: in its remaining length; 2: stopped. */
  #state = 0;
  #first = 0;
  #length = 0;
  #multiplier = 1;
  #lengthBytes = 0;
  /** Bytes of the current packet's body still to pass. */
  #skip = 0;

  constructor(recordBytesMax: number, onTooLarge: (p: OversizePublish) => boolean) {
    this.#recordBytesMax = recordBytesMax;
    this.#onTooLarge = onTooLarge;
  }

  push(chunk: Uint8Array): void {
    let i = 0;
    while (i < chunk.length && this.#state !== 2) {
      if (this.#skip > 0) {
        const n = Math.min(this.#skip, chunk.length - i);
        this.#skip -= n;
        i += n;
        continue;
      }
      const b = chunk[i++] ?? 0;
      if (this.#state === 0) {
        this.#first = b;
        this.#length = 0;
        this.#multiplier = 1;
        this.#lengthBytes = 0;
        this.#state = 1;
        continue;
      }
      this.#length += (b & 0x7f) * this.#multiplier;
      this.#multiplier *= 128;
      this.#lengthBytes++;
      if ((b & 0x80) !== 0) {
        if (this.#lengthBytes >= 4) this.#state = 2;
        continue;
      }
      this.#state = 0;
      this.#skip = this.#length;
      if (this.#first >> 4 !== PUBLISH) continue;
      const qos = (this.#first >> 1) & 3;
      // Remaining length = 2 + topic + packet id (QoS > 0) + payload; the record is 2 + topic + payload.
      const recordBytes = this.#length - (qos > 0 ? 2 : 0);
      if (recordBytes > this.#recordBytesMax && this.#onTooLarge({ qos, recordBytes })) this.#state = 2;
    }
  }
}
