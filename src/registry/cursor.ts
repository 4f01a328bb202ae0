/**
 * Sealed cursors: a listing that must resume after a name the caller may
 * not see (the catalog past its scan bound) hands out that name encrypted,
 * so its `Link` reveals nothing. AES-GCM with a 256-bit key kept in the
 * metadata store (made on first use), so every process sharing the store
 * opens every other's cursors. The name is padded to 256 bytes first, so all
 * cursors have one length. A sealed cursor starts with `~`, which no
 * repository name can.
 *
 * @module
 */
import type { MetadataStore } from "../meta/metadata_store.ts";

const PREFIX = "~";
const IV_BYTES = 12;
/** Names are padded to this many bytes before sealing, so a cursor's length says nothing. */
const PADDED_BYTES = 256;

function toBase64Url(bytes: Uint8Array): string {
  return btoa(String.fromCharCode(...bytes)).replace(/\+/g, "-").replace(/\//g, "_")
    .replace(/=+$/, "");
}

function fromBase64Url(text: string): Uint8Array<ArrayBuffer> | null {
  if (!/^[A-Za-z0-9_-]*$/.test(text)) return null;
  try {
    return Uint8Array.from(
      atob(text.replace(/-/g, "+").replace(/_/g, "/")),
      (c) => c.charCodeAt(0),
    );
  } catch {
    return null;
  }
}

/** Seals and opens cursors with the store's key. */
export class SealedCursors {
  readonly #meta: MetadataStore;
  #key: Promise<CryptoKey> | null = null;

  constructor(meta: MetadataStore) {
    this.#meta = meta;
  }

  #cryptoKey(): Promise<CryptoKey> {
    this.#key ??= this.#meta.secret("cursor").then((raw) =>
      crypto.subtle.importKey("raw", new Uint8Array(raw), "AES-GCM", false, ["encrypt", "decrypt"])
    ).catch((error) => {
      this.#key = null;
      throw error;
    });
    return this.#key;
  }

  /** Whether `cursor` is a sealed one (else it is a plain name). */
  static isSealed(cursor: string): boolean {
    return cursor.startsWith(PREFIX);
  }

  /** `name`, sealed. */
  async seal(name: string): Promise<string> {
    const iv = crypto.getRandomValues(new Uint8Array(IV_BYTES));
    const plain = new Uint8Array(PADDED_BYTES);
    const bytes0 = new TextEncoder().encode(name);
    if (bytes0.length >= PADDED_BYTES) throw new RangeError("Name too long for a cursor");
    plain.set(bytes0);
    const sealed = await crypto.subtle.encrypt(
      { name: "AES-GCM", iv },
      await this.#cryptoKey(),
      plain,
    );
    const bytes = new Uint8Array(IV_BYTES + sealed.byteLength);
    bytes.set(iv);
    bytes.set(new Uint8Array(sealed), IV_BYTES);
    return PREFIX + toBase64Url(bytes);
  }

  /** The name a sealed cursor holds; null for one this store did not seal, or tampered with. */
  async open(cursor: string): Promise<string | null> {
    const bytes = fromBase64Url(cursor.slice(PREFIX.length));
    if (!SealedCursors.isSealed(cursor) || bytes === null || bytes.length <= IV_BYTES) return null;
    try {
      const plain = await crypto.subtle.decrypt(
        { name: "AES-GCM", iv: bytes.subarray(0, IV_BYTES) },
        await this.#cryptoKey(),
        bytes.subarray(IV_BYTES),
      );
      const bytes0 = new Uint8Array(plain);
      const end = bytes0.indexOf(0);
      return new TextDecoder().decode(end === -1 ? bytes0 : bytes0.subarray(0, end));
    } catch {
      return null;
    }
  }
}
