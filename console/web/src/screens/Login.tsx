import { type FormEvent, useState } from "react";
import { Button } from "../components/ui/button";
import { Card } from "../components/ui/card";
import { Input, Label } from "../components/ui/input";
import { api } from "../lib/api";

export function Login({ onSignedIn }: { onSignedIn: () => void }) {
  const [name, setName] = useState("");
  const [password, setPassword] = useState("");
  const [error, setError] = useState("");

  async function submit(event: FormEvent) {
    event.preventDefault();
    setError("");
    try {
      await api.post("/api/auth/login", { name, password });
      onSignedIn();
    } catch (err) {
      setError(err instanceof Error ? err.message : "sign-in failed");
    }
  }

  return (
    <div className="flex min-h-screen items-center justify-center">
      <Card className="w-80">
        <h1 className="mb-4 text-lg font-semibold">fraudops console</h1>
        <form onSubmit={submit} className="flex flex-col gap-3">
          <Label htmlFor="name">Name</Label>
          <Input id="name" name="name" autoComplete="username" value={name} onChange={(e) => setName(e.target.value)} />
          <Label htmlFor="password">Password</Label>
          <Input
            id="password"
            name="password"
            type="password"
            autoComplete="current-password"
            value={password}
            onChange={(e) => setPassword(e.target.value)}
          />
          {error && (
            <p className="text-sm text-red-600" role="alert">
              {error}
            </p>
          )}
          <Button type="submit">Sign in</Button>
        </form>
      </Card>
    </div>
  );
}
