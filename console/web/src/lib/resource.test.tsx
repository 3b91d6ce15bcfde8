// @vitest-environment jsdom
import { act, renderHook, waitFor } from "@testing-library/react";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { useResource } from "./resource";

/** A fetch whose answers the test releases one by one; an aborted request rejects as the
 *  browser's does, so the hook's cancellation is what is tested. */
function fakeFetch() {
  const pending: { url: string; signal: AbortSignal; answer: (status: number, body: unknown) => void }[] = [];
  const fetch = vi.fn((url: string, init: RequestInit) => {
    const signal = init.signal as AbortSignal;
    return new Promise<Response>((resolve, reject) => {
      signal.addEventListener("abort", () => reject(new DOMException("aborted", "AbortError")));
      pending.push({
        url,
        signal,
        answer: (status, body) =>
          resolve(new Response(JSON.stringify(body), { status, headers: { "Content-Type": "application/json" } })),
      });
    });
  });
  return { fetch, pending };
}

let server: ReturnType<typeof fakeFetch>;
beforeEach(() => {
  server = fakeFetch();
  vi.stubGlobal("fetch", server.fetch);
});
afterEach(() => vi.unstubAllGlobals());

describe("useResource", () => {
  it("is loading until the answer arrives, then holds it", async () => {
    const { result } = renderHook(() => useResource<{ n: number }>("/api/a"));
    expect(result.current).toMatchObject({ loading: true, data: null, error: "" });
    await act(async () => server.pending[0].answer(200, { n: 1 }));
    expect(result.current).toMatchObject({ loading: false, data: { n: 1 }, error: "" });
  });

  it("shows the API's error instead of loading forever, and retries on reload", async () => {
    const { result } = renderHook(() => useResource<{ n: number }>("/api/a"));
    await act(async () => server.pending[0].answer(403, { detail: "your role may not label" }));
    expect(result.current).toMatchObject({ loading: false, data: null, error: "your role may not label" });
    act(() => result.current.reload());
    expect(result.current.loading).toBe(true);
    await act(async () => server.pending[1].answer(200, { n: 2 }));
    expect(result.current).toMatchObject({ loading: false, data: { n: 2 }, error: "" });
  });

  it("aborts the stale request when the path changes; its answer never shows", async () => {
    const { result, rerender } = renderHook(({ path }) => useResource<{ rows: string[] }>(path), {
      initialProps: { path: "/api/queue?band=BLOCK" },
    });
    rerender({ path: "/api/queue?band=CHALLENGE" });
    expect(server.pending[0].signal.aborted).toBe(true);
    await act(async () => server.pending[1].answer(200, { rows: ["challenge"] }));
    await act(async () => server.pending[0].answer(200, { rows: ["block"] }));
    expect(result.current.data).toEqual({ rows: ["challenge"] });
  });

  it("merges a next page into the same path's data, never into another path's", async () => {
    const merge = (a: { rows: string[] }, b: { rows: string[] }) => ({ rows: [...a.rows, ...b.rows] });
    const { result, rerender } = renderHook(({ path }) => useResource(path, merge), { initialProps: { path: "/api/q?f=1" } });
    await act(async () => server.pending[0].answer(200, { rows: ["a"] }));
    act(() => result.current.more("/api/q?f=1&cursor=x"));
    rerender({ path: "/api/q?f=2" });
    await waitFor(() => expect(server.pending).toHaveLength(3));
    expect(server.pending[1].signal.aborted).toBe(true);
    await act(async () => server.pending[2].answer(200, { rows: ["b"] }));
    expect(result.current.data).toEqual({ rows: ["b"] });
    act(() => result.current.more("/api/q?f=2&cursor=y"));
    await act(async () => server.pending[3].answer(200, { rows: ["c"] }));
    expect(result.current.data).toEqual({ rows: ["b", "c"] });
  });
});
