/** The console API: same-origin fetches with the session cookie; every write repeats the
 *  CSRF cookie in the X-CSRF-Token header (the server checks both against the session). */

import type { components } from "./api-types";

export class ApiError extends Error {
  constructor(
    public status: number,
    message: string,
    /** The response's `detail` as sent (an object for a refused rule: field, problem, position). */
    public detail?: unknown,
  ) {
    super(message);
  }
}

function cookie(name: string): string {
  const entry = document.cookie.split("; ").find((c) => c.startsWith(`${name}=`));
  return entry ? decodeURIComponent(entry.slice(name.length + 1)) : "";
}

async function request<T>(method: string, path: string, body?: unknown, signal?: AbortSignal): Promise<T> {
  const headers: Record<string, string> = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET") headers["X-CSRF-Token"] = cookie("fraudops_csrf");
  const response = await fetch(path, {
    method,
    headers,
    credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
    signal,
  });
  if (!response.ok) {
    let detail = response.statusText;
    let sent: unknown;
    try {
      sent = (await response.json()).detail;
      detail = typeof sent === "string" ? sent : JSON.stringify(sent);
    } catch {
      /* not JSON: keep the status text */
    }
    if (response.status === 401 && !path.endsWith("/login")) window.dispatchEvent(new Event("signed-out"));
    throw new ApiError(response.status, detail, sent);
  }
  return (await response.json()) as T;
}

export const api = {
  get: <T>(path: string, signal?: AbortSignal) => request<T>("GET", path, undefined, signal),
  post: <T>(path: string, body: unknown = {}, signal?: AbortSignal) => request<T>("POST", path, body, signal),
  put: <T>(path: string, body: unknown) => request<T>("PUT", path, body),
  del: <T>(path: string) => request<T>("DELETE", path),
};

/** Every API answer's type, generated from the backend's OpenAPI schema (`npm run api-types`). */
export type Schemas = components["schemas"];
export type Me = Schemas["Me"];
export type QueueItem = Schemas["QueueItem"];
export type QueuePage = Schemas["QueuePage"];
export type ReviewQueueItem = Schemas["ReviewQueueItem"];
export type ReviewQueuePage = Schemas["ReviewQueuePage"];
/** Why the review-queue job put an item in front of an analyst (fraudops/review_queue.py). */
export type QueueReason = ReviewQueueItem["reason"];
// The rules and lists screens' answers (console/rules_routes.py).
export type RuleRow = Schemas["RuleRow"];
export type RulesAnswer = Schemas["Rules"];
export type BacktestResult = Schemas["Backtest"];
export type RuleList = Schemas["RuleList"];
export type ListItem = Schemas["ListItem"];
export type ShadowMatch = Schemas["ShadowMatch"];

/** One score of the live stream (an SSE event, so outside the OpenAPI schema). */
export interface LiveItem {
  transaction_id: string;
  score: number;
  band: string;
  model_version: string;
  reasons: string[];
  latency_us: number;
}
