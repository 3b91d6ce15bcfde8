import { useCallback, useEffect, useState } from "react";
import { NavLink, Route, Routes } from "react-router-dom";
import { Button } from "./components/ui/button";
import { api, type Me } from "./lib/api";
import { MeContext } from "./lib/me";
import { cn } from "./lib/utils";
import { Lists } from "./screens/Lists";
import { Live } from "./screens/Live";
import { Login } from "./screens/Login";
import { Models } from "./screens/Models";
import { Queue } from "./screens/Queue";
import { Rules } from "./screens/Rules";
import { Transaction } from "./screens/Transaction";
import { Trends } from "./screens/Trends";

const SCREENS = [
  ["/", "Live"],
  ["/queue", "Queue"],
  ["/models", "Models"],
  ["/trends", "Trends"],
  ["/rules", "Rules"],
  ["/lists", "Lists"],
] as const;

export function App() {
  const [me, setMe] = useState<Me | null | undefined>(undefined);
  const load = useCallback(() => {
    api.get<Me>("/api/auth/me").then(setMe, () => setMe(null));
  }, []);
  useEffect(() => {
    load();
    const signedOut = () => setMe(null);
    window.addEventListener("signed-out", signedOut);
    return () => window.removeEventListener("signed-out", signedOut);
  }, [load]);

  if (me === undefined) return null;
  if (me === null) return <Login onSignedIn={load} />;
  return (
    <MeContext.Provider value={me}>
      <header className="flex items-center gap-6 border-b border-slate-200 bg-white px-6 py-3">
        <span className="font-semibold">fraudops console</span>
        <nav className="flex gap-1">
          {SCREENS.map(([path, name]) => (
            <NavLink
              key={path}
              to={path}
              end={path === "/"}
              className={({ isActive }) =>
                cn("rounded-md px-3 py-1.5 text-sm", isActive ? "bg-slate-900 text-white" : "hover:bg-slate-100")
              }
            >
              {name}
            </NavLink>
          ))}
        </nav>
        <span className="ml-auto text-sm text-slate-500" data-testid="whoami">
          {me.name} ({me.role})
        </span>
        <Button variant="outline" size="sm" onClick={() => api.post("/api/auth/logout").finally(() => setMe(null))}>
          Sign out
        </Button>
      </header>
      <main className="mx-auto max-w-7xl p-6">
        <Routes>
          <Route path="/" element={<Live />} />
          <Route path="/queue" element={<Queue />} />
          <Route path="/transactions/:id" element={<Transaction />} />
          <Route path="/models" element={<Models />} />
          <Route path="/trends" element={<Trends />} />
          <Route path="/rules" element={<Rules />} />
          <Route path="/lists" element={<Lists />} />
          <Route path="*" element={<p>No such screen.</p>} />
        </Routes>
      </main>
    </MeContext.Provider>
  );
}
