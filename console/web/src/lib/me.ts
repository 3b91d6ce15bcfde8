import { createContext, useContext } from "react";
import type { Me } from "./api";

/** The signed-in user, provided by App and read by the screens (which show write controls
 *  only when `may` allows). Its own module so that no screen imports App. */
export const MeContext = createContext<Me | null>(null);

export function useMe(): Me {
  const me = useContext(MeContext);
  if (!me) throw new Error("useMe outside a signed-in page");
  return me;
}
