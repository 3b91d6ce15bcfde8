/** One GET resource for a screen: loading, error and cancellation in one place. A new path
 *  (or a reload) aborts the request still in flight, so a stale answer never overwrites a
 *  fresh one, and an error is shown instead of "Loading…" forever. */

import { useCallback, useEffect, useState } from "react";
import { api, ApiError } from "./api";

export interface Resource<T> {
  data: T | null;
  error: string;
  loading: boolean;
  reload: () => void;
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

export function useResource<T>(path: string | null): Resource<T> {
  const [data, setData] = useState<T | null>(null);
  const [error, setError] = useState("");
  const [loading, setLoading] = useState(path !== null);
  const [generation, setGeneration] = useState(0);
  const reload = useCallback(() => setGeneration((g) => g + 1), []);

  useEffect(() => {
    if (path === null) {
      setData(null);
      setLoading(false);
      return;
    }
    const controller = new AbortController();
    setLoading(true);
    api.get<T>(path, controller.signal).then(
      (value) => {
        setData(value);
        setError("");
        setLoading(false);
      },
      (err: unknown) => {
        if (isAbort(err)) return;
        setError(problemOf(err));
        setLoading(false);
      },
    );
    return () => controller.abort();
  }, [path, generation]);

  return { data, error, loading, reload };
}
