/** The one way a screen reads the API: loading, error and cancellation in one place. A new
 *  path (or a reload) aborts the request still in flight, so a stale answer never overwrites
 *  a fresh one, and an error is shown (with a retry) instead of "Loading…" forever. */

import { useCallback, useEffect, useState } from "react";
import { api, ApiError } from "./api";

export interface Resource<T> {
  /** The answer for the current path (kept while a reload runs; null until the first one). */
  data: T | null;
  error: string;
  loading: boolean;
  reload: () => void;
  /** Fetch `path` (the next page of a list) and merge its answer into `data`. */
  more: (path: string) => void;
  /** Change the data shown without a request (a labelled item leaves the list). */
  update: (change: (data: T) => T) => void;
}

export function isAbort(err: unknown): boolean {
  return err instanceof DOMException && err.name === "AbortError";
}

/** What a refused request says, for a person: the API's message, or its first field error. */
export function problemOf(err: unknown): string {
  if (!(err instanceof Error)) return "the request failed";
  if (err instanceof ApiError && Array.isArray(err.detail) && err.detail.length) {
    const first = err.detail[0] as { loc?: unknown[]; msg?: string };
    const where = (first.loc ?? []).filter((p) => p !== "body").join(".");
    return `${where ? `${where}: ` : ""}${first.msg ?? err.message}`;
  }
  if (err instanceof ApiError && err.detail && typeof err.detail === "object" && "message" in err.detail) {
    return String((err.detail as { message: unknown }).message);
  }
  return err.message;
}

interface Settled<T> {
  key: string;
  path: string;
  data: T | null;
  error: string;
}

/** `path` null: nothing to fetch. `merge` joins a page fetched by `more` to the data shown;
 *  a page never joins the data of another path (the filter changed meanwhile). */
export function useResource<T>(path: string | null, merge?: (shown: T, page: T) => T): Resource<T> {
  const [generation, setGeneration] = useState(0);
  const [next, setNext] = useState<{ base: string; path: string } | null>(null);
  const [settled, setSettled] = useState<Settled<T> | null>(null);
  const base = path === null ? null : `${generation}:${path}`;
  const page = next !== null && next.base === base ? next.path : null;
  const key = base === null ? null : page === null ? base : `${base}+${page}`;

  useEffect(() => {
    if (key === null || path === null) return;
    const controller = new AbortController();
    api.get<T>(page ?? path, controller.signal).then(
      (value) =>
        setSettled((s) => {
          const joined = page !== null && merge && s?.path === path && s.data !== null;
          return { key, path, data: joined ? merge(s.data as T, value) : value, error: "" };
        }),
      (err: unknown) => {
        if (isAbort(err)) return;
        setSettled((s) => ({ key, path, data: s?.path === path ? s.data : null, error: problemOf(err) }));
      },
    );
    return () => controller.abort();
  }, [key, path, page, merge]);

  const reload = useCallback(() => setGeneration((g) => g + 1), []);
  const more = useCallback((p: string) => base !== null && setNext({ base, path: p }), [base]);
  const update = useCallback(
    (change: (data: T) => T) => setSettled((s) => (s && s.data !== null ? { ...s, data: change(s.data) } : s)),
    [],
  );
  const current = settled !== null && settled.path === path;
  return {
    data: current ? settled.data : null,
    error: settled !== null && settled.key === key ? settled.error : "",
    loading: key !== null && settled?.key !== key,
    reload,
    more,
    update,
  };
}
