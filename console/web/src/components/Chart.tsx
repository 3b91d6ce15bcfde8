import * as chartjs from "chart.js";
import { useEffect, useRef } from "react";

type ChartConfiguration = chartjs.ChartConfiguration;
const ChartJS = chartjs.Chart;

// Only the pieces the screens draw, so the bundle carries no unused chart types.
ChartJS.register(
  chartjs.BarController,
  chartjs.BarElement,
  chartjs.CategoryScale,
  chartjs.Legend,
  chartjs.LinearScale,
  chartjs.LineController,
  chartjs.LineElement,
  chartjs.PointElement,
  chartjs.ScatterController,
  chartjs.Tooltip,
);

/** A Chart.js canvas that redraws in place when `config`'s data changes. */
export function Chart({ config, height = 220 }: { config: ChartConfiguration; height?: number }) {
  const canvas = useRef<HTMLCanvasElement>(null);
  const chart = useRef<chartjs.Chart | null>(null);
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
