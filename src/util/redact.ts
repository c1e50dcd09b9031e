/**
 * The one place secrets are scrubbed from text that leaves the process
 * (log lines, reports, error messages). Secrets are registered as they are read.
 */
const secrets = new Set<string>();

export function registerSecret(value: string | undefined | null): void {
  if (value && value.length >= 4) secrets.add(value);
}

export function redact(text: string): string {
  let out = text;
  for (const secret of secrets) {
    if (out.includes(secret)) out = out.split(secret).join("***");
  }
  // Bearer tokens and API keys that slipped through in headers or URLs.
  out = out.replace(/(bearer\s+)[A-Za-z0-9._~+/=-]{8,}/gi, "$1***");
  out = out.replace(/([?&]key=)[^&\s]+/gi, "$1***");
  return out;
}

/** For tests: forget every registered secret. */
export function clearSecrets(): void {
  secrets.clear();
}
