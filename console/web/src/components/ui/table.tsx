import type { HTMLAttributes, ReactNode, TdHTMLAttributes, ThHTMLAttributes } from "react";
import { cn } from "../../lib/utils";

export function Table({ className, ...props }: HTMLAttributes<HTMLTableElement>) {
  return <table className={cn("w-full border-collapse text-sm", className)} {...props} />;
}

export function Th({ className, ...props }: ThHTMLAttributes<HTMLTableCellElement>) {
  return (
    <th
      className={cn("border-b border-slate-200 px-2 py-1.5 text-left text-xs font-semibold text-slate-500", className)}
      {...props}
    />
  );
}

export function Td({ className, ...props }: TdHTMLAttributes<HTMLTableCellElement>) {
  return <td className={cn("border-b border-slate-100 px-2 py-1.5", className)} {...props} />;
}

type DataAttributes = Record<`data-${string}`, unknown>;

/** One column of a DataTable: its heading and what a row shows in it. `className` styles the
 *  heading and the cells alike (alignment, width), `cellClassName` the cells only;
 *  `cellProps` gives a cell its own attributes (a tooltip, a test id). */
export interface Column<T> {
  heading: ReactNode;
  cell: (row: T, index: number) => ReactNode;
  className?: string;
  cellClassName?: string;
  cellProps?: (row: T) => TdHTMLAttributes<HTMLTableCellElement> & DataAttributes;
}

interface DataTableProps<T> extends HTMLAttributes<HTMLTableElement> {
  columns: Column<T>[];
  rows: readonly T[];
  rowKey: (row: T, index: number) => string | number;
  /** A row's own attributes: selection, click, test ids. */
  rowProps?: (row: T, index: number) => HTMLAttributes<HTMLTableRowElement> & DataAttributes;
}

/** A table described column by column, so a heading and its cells are written once and a
 *  column every screen shows (a transaction, its band) is defined once (components/columns). */
export function DataTable<T>({ columns, rows, rowKey, rowProps, ...props }: DataTableProps<T>) {
  return (
    <Table {...props}>
      <thead>
        <tr>
          {columns.map((column, i) => (
            <Th key={i} className={column.className}>
              {column.heading}
            </Th>
          ))}
        </tr>
      </thead>
      <tbody>
        {rows.map((row, index) => (
          <tr key={rowKey(row, index)} {...rowProps?.(row, index)}>
            {columns.map((column, i) => (
              <Td key={i} className={cn(column.className, column.cellClassName)} {...column.cellProps?.(row)}>
                {column.cell(row, index)}
              </Td>
            ))}
          </tr>
        ))}
      </tbody>
    </Table>
  );
}
