import { useCallback, useEffect, useState } from "react";
import { NavLink, Route, Routes } from "react-router-dom";
import { Button } from "./components/ui/button";
import { api, type Me } from "./lib/api";
import { MeContext } from "./lib/me";
import { useResource } from "./lib/resource";
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
  const me = useResource<Me>("/api/auth/me");
  // Any 401 (this session expired or was signed out elsewhere) shows the sign-in form.
  const [signedOut, setSignedOut] = useState(false);
  useEffect(() => {
    const signOut = () => setSignedOut(true);
    window.addEventListener("signed-out", signOut);
    return () => window.removeEventListener("signed-out", signOut);
  }, []);
  const { reload } = me;
  const signedIn = useCallback(() => {
    setSignedOut(false);
    reload();
  }, [reload]);

  if (signedOut || me.error) return <Login onSignedIn={signedIn} />;
  if (me.data === null || me.loading) return null;
  return (
    <MeContext.Provider value={me.data}>
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
          {me.data.name} ({me.data.role})
        </span>
        <Button variant="outline" size="sm" onClick={() => api.post("/api/auth/logout").finally(() => setSignedOut(true))}>
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
