/**
 * How the refserver-lite command writes its log (stderr): pino's JSON lines, one object a line,
 * for journald, files and log shippers; or, on a terminal, readable lines:
 *
 *   14:02:31.207 INFO  paper uploaded doc_id=4f0c… zotero_key=ABCD1234 title="Glacier dynamics" bytes=48213
 *   14:02:31.912 DEBUG request method=GET url=/api/v1/jobs status=200 ms=1.8 reqId=req-7
 *
 * The readable form is made here, synchronously, from each JSON line pino writes: no dependency
 * (pino-pretty would add a dozen packages and a transport thread) and nothing buffered in another
 * thread that an exit could lose.
 */
export type LogFormat = "pretty" | "json";

/** `--log-format` / REFSERVER_LOG_FORMAT if given, else pretty on a terminal and JSON otherwise. */
export function chooseLogFormat(requested: string | undefined, isTTY: boolean): LogFormat | Error {
  if (requested === undefined || requested === "") return isTTY ? "pretty" : "json";
  if (requested === "pretty" || requested === "json") return requested;
  return new Error(`--log-format must be pretty or json, got "${requested}"`);
}

/** Colours on a terminal unless NO_COLOR is set (https://no-color.org) or TERM is dumb. */
export function useColor(stream: { isTTY?: boolean }, env: NodeJS.ProcessEnv): boolean {
  return stream.isTTY === true && !env.NO_COLOR && env.TERM !== "dumb";
}

const LEVELS: Record<number, { name: string; color: string }> = {
  10: { name: "TRACE", color: "\x1b[90m" },
  20: { name: "DEBUG", color: "\x1b[36m" },
  30: { name: "INFO", color: "\x1b[32m" },
  40: { name: "WARN", color: "\x1b[33m" },
  50: { name: "ERROR", color: "\x1b[31m" },
  60: { name: "FATAL", color: "\x1b[35m" },
};
const RESET = "\x1b[0m";
const DIM = "\x1b[2m";
/** Fields every line has, or that the line shows in its own place. */
const SHOWN_ELSEWHERE = new Set(["level", "time", "pid", "hostname", "msg", "reqId", "err"]);

function value(v: unknown): string {
  if (typeof v === "string") return /^[^\s"=]+$/.test(v) ? v : JSON.stringify(v);
  if (v === null || typeof v === "number" || typeof v === "boolean") return String(v);
  return JSON.stringify(v) ?? String(v);
}

function clock(ms: number): string {
  const d = new Date(ms);
  const two = (n: number): string => String(n).padStart(2, "0");
  return `${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}.${String(d.getMilliseconds()).padStart(3, "0")}`;
}

/** One pino JSON line as a readable line (a line that is not JSON passes through). */
export function formatLogLine(line: string, color = false): string {
  let rec: Record<string, unknown>;
  try {
    const parsed: unknown = JSON.parse(line);
    if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) throw new Error("not a record");
    rec = parsed as Record<string, unknown>;
  } catch {
    return line.endsWith("\n") ? line : `${line}\n`;
  }
  const levelNum = typeof rec.level === "number" ? rec.level : 30;
  const level = LEVELS[levelNum] ?? { name: String(rec.level), color: "" };
  const paint = (code: string, text: string): string => (color && code ? `${code}${text}${RESET}` : text);
  const fields: string[] = [];
  for (const [k, v] of Object.entries(rec)) {
    if (SHOWN_ELSEWHERE.has(k) || v === undefined) continue;
    fields.push(`${k}=${value(v)}`);
  }
  let trailer = "";
  const err = rec.err as { message?: unknown; stack?: unknown } | undefined;
  if (err && typeof err === "object") {
    fields.push(`err=${value(String(err.message ?? ""))}`);
    if (levelNum >= 50 && typeof err.stack === "string") trailer = `\n${err.stack.replace(/^/gm, "    ")}`;
  }
  if (rec.reqId !== undefined) fields.push(paint(DIM, `reqId=${value(rec.reqId)}`));
  const time = paint(DIM, clock(typeof rec.time === "number" ? rec.time : Date.now()));
  const head = `${time} ${paint(level.color, level.name.padEnd(5))} ${String(rec.msg ?? "")}`;
  return `${head}${fields.length > 0 ? ` ${fields.join(" ")}` : ""}${trailer}\n`;
}

/** A pino destination that writes each line readable to `out`. */
export function prettyLogStream(out: NodeJS.WritableStream, color: boolean): { write(line: string): void } {
  return {
    write(chunk: string): void {
      let text = "";
      for (const line of chunk.split("\n")) if (line !== "") text += formatLogLine(line, color);
      out.write(text);
    },
  };
}
