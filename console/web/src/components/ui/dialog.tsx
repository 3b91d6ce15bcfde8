import * as DialogPrimitive from "@radix-ui/react-dialog";
import type { ReactNode } from "react";

export function ConfirmDialog(props: { trigger: ReactNode; title: string; description: string; confirm: ReactNode }) {
  return (
    <DialogPrimitive.Root>
      <DialogPrimitive.Trigger asChild>{props.trigger}</DialogPrimitive.Trigger>
      <DialogPrimitive.Portal>
        <DialogPrimitive.Overlay className="fixed inset-0 bg-black/40" />
        <DialogPrimitive.Content className="fixed left-1/2 top-1/3 w-96 -translate-x-1/2 rounded-lg bg-white p-5 shadow-xl">
          <DialogPrimitive.Title className="text-lg font-semibold">{props.title}</DialogPrimitive.Title>
          <DialogPrimitive.Description className="mt-2 text-sm text-slate-600">{props.description}</DialogPrimitive.Description>
          <div className="mt-4 flex justify-end gap-2">
            <DialogPrimitive.Close className="h-9 rounded-md border border-slate-300 px-3 text-sm">Cancel</DialogPrimitive.Close>
            <DialogPrimitive.Close asChild>{props.confirm}</DialogPrimitive.Close>
          </div>
        </DialogPrimitive.Content>
      </DialogPrimitive.Portal>
    </DialogPrimitive.Root>
  );
}
