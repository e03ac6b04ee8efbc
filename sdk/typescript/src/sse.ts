/** One Server-Sent Event: its type (`message` unless named), data, and the stream's last id. */
export interface SseEvent {
  event: string;
  data: string;
  id: string | undefined;
}

/**
 * A parser of the `text/event-stream` format (WHATWG), fed text as it arrives. Comment lines
 * (keep-alives) are skipped; an event is dispatched at the blank line ending it if it has data.
 */
export class SseParser {
  #buffer = "";
  #event = "";
  #data: string[] = [];
  #lastId: string | undefined;

  constructor(lastId?: string) {
    this.#lastId = lastId;
  }

  /** Takes a chunk of text; returns the events it completes. */
  feed(text: string): SseEvent[] {
    this.#buffer += text;
    const events: SseEvent[] = [];
    for (;;) {
      const end = this.#buffer.search(/\r\n|\r|\n/);
      if (end < 0) break;
      // A lone \r at the end of the buffer may be the first half of \r\n.
      if (this.#buffer[end] === "\r" && end === this.#buffer.length - 1) break;
      const line = this.#buffer.slice(0, end);
      const width = this.#buffer.startsWith("\r\n", end) ? 2 : 1;
      this.#buffer = this.#buffer.slice(end + width);
      const event = this.#line(line);
      if (event) events.push(event);
    }
    return events;
  }

  #line(line: string): SseEvent | undefined {
    if (line === "") return this.#dispatch();
    if (line.startsWith(":")) return undefined;
    const colon = line.indexOf(":");
    const name = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (name === "event") this.#event = value;
    else if (name === "data") this.#data.push(value);
    else if (name === "id" && !value.includes("\0")) this.#lastId = value;
    return undefined;
  }

  #dispatch(): SseEvent | undefined {
    const event = this.#event || "message";
    const data = this.#data;
    this.#event = "";
    this.#data = [];
    if (data.length === 0) return undefined;
    return { event, data: data.join("\n"), id: this.#lastId };
  }
}
