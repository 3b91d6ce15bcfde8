import * as LabelPrimitive from "@radix-ui/react-label";
import type { ComponentProps, InputHTMLAttributes, ReactNode, SelectHTMLAttributes } from "react";
import { cn } from "../../lib/utils";

const field = "h-9 rounded-md border border-slate-300 bg-white px-2 text-sm focus:outline-none focus:ring-2 focus:ring-slate-400";

export function Input({ className, ...props }: InputHTMLAttributes<HTMLInputElement>) {
  return <input className={cn(field, className)} {...props} />;
}

export function NativeSelect({ className, ...props }: SelectHTMLAttributes<HTMLSelectElement>) {
  return <select className={cn(field, className)} {...props} />;
}

export function Label({ className, ...props }: ComponentProps<typeof LabelPrimitive.Root>) {
  return <LabelPrimitive.Root className={cn("text-xs font-medium text-slate-600", className)} {...props} />;
}

/** A form control under its label, the shape of every form of the console; `children` is
 *  the control `htmlFor` names, or a row of controls. */
export function Field({
  label,
  htmlFor,
  className,
  children,
}: {
  label: ReactNode;
  htmlFor?: string;
  className?: string;
  children: ReactNode;
}) {
  return (
    <div className={cn("flex flex-col gap-1", className)}>
      <Label htmlFor={htmlFor}>{label}</Label>
      {children}
    </div>
  );
}

type Labelled = { label: ReactNode; id: string; fieldClassName?: string };

/** An Input under its label (`id` names both). */
export function InputField({ label, fieldClassName, ...props }: InputHTMLAttributes<HTMLInputElement> & Labelled) {
  return (
    <Field label={label} htmlFor={props.id} className={fieldClassName}>
      <Input {...props} />
    </Field>
  );
}

/** A value, or a value and the text that shows it. */
export type Option = string | readonly [value: string, text: string];

/** A NativeSelect of `options`. */
export function Select({ options, ...props }: SelectHTMLAttributes<HTMLSelectElement> & { options: readonly Option[] }) {
  return (
    <NativeSelect {...props}>
      {options.map((option) => {
        const [value, text] = typeof option === "string" ? [option, option] : option;
        return (
          <option key={value} value={value}>
            {text}
          </option>
        );
      })}
    </NativeSelect>
  );
}

/** A Select under its label (`id` names both). */
export function SelectField({
  label,
  fieldClassName,
  ...props
}: SelectHTMLAttributes<HTMLSelectElement> & Labelled & { options: readonly Option[] }) {
  return (
    <Field label={label} htmlFor={props.id} className={fieldClassName}>
      <Select {...props} />
    </Field>
  );
}
