// The client side shared by the server's load benchmarks (upload-load.mjs, pg-load.mjs): the
// admin they start servers with, login, one timed upload, stopping a server, percentiles.

export const ADMIN = { REFSERVER_ADMIN_USER: "bench", REFSERVER_ADMIN_PASSWORD: "bench-password" };

/** SIGTERM a server started by a benchmark ({ child, exited }) and wait for it to end. */
export async function stop(server) {
  server.child.kill("SIGTERM");
  await server.exited;
}

export async function login(url) {
  const res = await fetch(`${url}/api/v1/auth/login`, {
    method: "POST",
    body: new URLSearchParams({ username: ADMIN.REFSERVER_ADMIN_USER, password: ADMIN.REFSERVER_ADMIN_PASSWORD }),
  });
  if (res.status !== 200) throw new Error(`login: ${res.status} ${await res.text()}`);
  return (await res.json()).access_token;
}

/** One upload of `pdf` as paper `i` (key `prefix` + number), timed as the client sees it. */
export async function upload(url, token, pdf, i, prefix) {
  const form = new FormData();
  form.append("title", `${prefix} ${i}`);
  form.append("authors", '["Bench Author"]');
  form.append("zotero_key", `${prefix}${String(i).padStart(8 - prefix.length, "0")}`);
  form.append("zotero_library_id", "1");
  form.append("file", new Blob([pdf], { type: "application/pdf" }), `${prefix}-${i}.pdf`);
  const t0 = performance.now();
  try {
    const res = await fetch(`${url}/api/v1/papers/upload_with_metadata`, {
      method: "POST",
      headers: { authorization: `Bearer ${token}` },
      body: form,
      signal: AbortSignal.timeout(120_000),
    });
    const text = await res.text();
    return { status: res.status, ms: performance.now() - t0, locked: /database is locked/i.test(text) };
  } catch (err) {
    return { status: 0, ms: performance.now() - t0, locked: false, error: String(err) };
  }
}

export function percentile(sorted, p) {
  if (sorted.length === 0) return NaN;
  const idx = Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1);
  return sorted[Math.max(0, idx)];
}
