export { buildApp, DEFAULT_MAX_UPLOAD_BYTES, DB_FILENAME, type AppOptions } from "./app.js";
export { startServer, type StartServerOptions, type RunningServer } from "./server.js";
export { VERSION } from "./version.js";
