import { cva, type VariantProps } from "class-variance-authority";
import type { HTMLAttributes } from "react";
import { cn } from "../../lib/utils";

const badgeVariants = cva("inline-flex items-center rounded px-1.5 py-0.5 text-xs font-semibold", {
  variants: {
    band: {
      ALLOW: "bg-green-100 text-green-800",
      CHALLENGE: "bg-amber-100 text-amber-800",
      BLOCK: "bg-red-100 text-red-800",
      FRAUD: "bg-red-600 text-white",
      LEGIT: "bg-green-600 text-white",
      none: "bg-slate-100 text-slate-700",
    },
  },
  defaultVariants: { band: "none" },
});

type Band = NonNullable<VariantProps<typeof badgeVariants>["band"]>;

export function Badge({ value, className, ...props }: { value: string } & HTMLAttributes<HTMLSpanElement>) {
  const band = (["ALLOW", "CHALLENGE", "BLOCK", "FRAUD", "LEGIT"].includes(value) ? value : "none") as Band;
  return (
    <span className={cn(badgeVariants({ band }), className)} {...props}>
      {value}
    </span>
  );
}
