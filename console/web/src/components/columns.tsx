/** The columns of a scored transaction that several screens list (queue, review queue,
 *  backtest, live, a user's last day): one definition each; a screen adjusts one by
 *  spreading it with its own class or heading. Imported as a namespace:
 *  `tx.amount` is the amount column. */

import { Link } from "react-router-dom";
import { cn } from "../lib/utils";
import { formatAmount, formatScore, formatTime } from "../lib/format";
import { Badge } from "./ui/badge";
import type { Column } from "./ui/table";

export function TransactionLink({ id, className }: { id: string; className?: string }) {
  return (
    <Link className={cn("text-blue-700 hover:underline", className)} to={`/transactions/${encodeURIComponent(id)}`}>
      {id}
    </Link>
  );
}

export const transaction: Column<{ transaction_id: string }> = {
  heading: "Transaction",
  cell: (t) => <TransactionLink id={t.transaction_id} />,
};
export const user: Column<{ user_id: number }> = { heading: "User", cell: (t) => t.user_id };
export const type: Column<{ type: string }> = { heading: "Type", cell: (t) => t.type };
export const amount: Column<{ amount: number }> = {
  heading: "Amount",
  className: "text-right",
  cell: (t) => formatAmount(t.amount),
};
export const channel: Column<{ channel: string | null }> = { heading: "Channel", cell: (t) => t.channel ?? "" };
export const band: Column<{ band: string }> = { heading: "Band", cell: (t) => <Badge value={t.band} /> };
export const score: Column<{ score: number }> = { heading: "Score", cell: (t) => formatScore(t.score) };
export const model: Column<{ model_version: string }> = { heading: "Model", cell: (t) => t.model_version };
export const scoredAt: Column<{ scored_at: string }> = { heading: "Scored", cell: (t) => formatTime(t.scored_at) };
export const claimedBy: Column<{ claimed_by: string | null }> = {
  heading: "Claimed by",
  cell: (t) => t.claimed_by ?? "",
};
