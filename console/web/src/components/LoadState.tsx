import { Button } from "./ui/button";

/** What a screen shows while its data loads or after it failed (with a retry), so no screen
 *  stays on "Loading…" when the request cannot succeed. */
export function LoadState({ loading, error, onRetry }: { loading: boolean; error: string; onRetry?: () => void }) {
  if (error) {
    return (
      <p className="flex items-center gap-3 text-sm text-red-700" role="alert">
        {error}
        {onRetry && (
          <Button size="sm" variant="outline" onClick={onRetry}>
            Retry
          </Button>
        )}
      </p>
    );
  }
  return loading ? <p className="text-sm text-slate-500">Loading…</p> : null;
}
