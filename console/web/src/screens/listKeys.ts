import { useEffect } from "react";
import { useNavigate } from "react-router-dom";

type Verdict = "FRAUD" | "LEGIT";

/** The keys of a work list: j / k move, Enter opens, f fraud, l legit, and `onNext` (when
 *  given) on n. One handler for the review queue and the flagged list, so they agree. */
export function useListKeys<T extends { transaction_id: string }>(
  items: T[],
  selected: number,
  setSelected: (index: number) => void,
  label: (item: T | undefined, verdict: Verdict) => void,
  onNext?: (next: T | undefined) => void,
) {
  const navigate = useNavigate();
  useEffect(() => {
    function onKey(event: KeyboardEvent) {
      if (event.target instanceof HTMLInputElement || event.target instanceof HTMLSelectElement) return;
      const item = items[selected];
      const move = (to: number) => setSelected(Math.max(0, Math.min(items.length - 1, to)));
      if (event.key === "j") move(selected + 1);
      else if (event.key === "k") move(selected - 1);
      else if (event.key === "f") label(item, "FRAUD");
      else if (event.key === "l") label(item, "LEGIT");
      else if (event.key === "n" && onNext) {
        onNext(items[selected + 1]);
        move(selected + 1);
      } else if (event.key === "Enter" && item) navigate(`/transactions/${encodeURIComponent(item.transaction_id)}`);
    }
    window.addEventListener("keydown", onKey);
    return () => window.removeEventListener("keydown", onKey);
  }, [items, selected, setSelected, label, onNext, navigate]);
}
