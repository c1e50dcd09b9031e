/** JSON schemas shared by the route plugins. */
export const detailSchema = {
  type: "object",
  properties: { detail: {} },
  required: ["detail"],
} as const;

export const stepSchema = {
  type: "object",
  properties: {
    status: { type: "string" },
    error: { type: ["string", "null"] },
    completed_at: { type: ["string", "null"] },
  },
} as const;

export const errorResponses = {
  400: detailSchema,
  401: detailSchema,
  403: detailSchema,
  404: detailSchema,
  409: detailSchema,
  413: detailSchema,
  422: detailSchema,
  500: detailSchema,
  507: detailSchema,
} as const;
