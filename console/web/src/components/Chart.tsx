import {
  BarController,
  BarElement,
  CategoryScale,
  Chart as ChartJS,
  type ChartConfiguration,
  Legend,
  LinearScale,
  LineController,
  LineElement,
  PointElement,
  ScatterController,
  Tooltip,
} from "chart.js";
import { useEffect, useRef } from "react";

// Only the pieces the screens draw, so the bundle carries no unused chart types.
ChartJS.register(
  BarController,
  BarElement,
  CategoryScale,
  Legend,
  LinearScale,
  LineController,
  LineElement,
  PointElement,
  ScatterController,
  Tooltip,
);

/** A Chart.js canvas that redraws in place when `config`'s data changes. */
export function Chart({ config, height = 220 }: { config: ChartConfiguration; height?: number }) {
  const canvas = useRef<HTMLCanvasElement>(null);
  const chart = useRef<ChartJS | null>(null);
  useEffect(() => {
    if (!canvas.current) return;
    chart.current = new ChartJS(canvas.current, {
      ...config,
      options: { animation: false, maintainAspectRatio: false, ...config.options },
    });
    return () => chart.current?.destroy();
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [config.type]);
  useEffect(() => {
    if (!chart.current) return;
    chart.current.data = config.data;
    chart.current.update("none");
  }, [config.data]);
  return (
    <div style={{ height }}>
      <canvas ref={canvas} />
    </div>
  );
}
