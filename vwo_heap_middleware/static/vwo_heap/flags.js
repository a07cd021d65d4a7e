// vwo-heap-middleware: the server's flag decisions in the browser. An ES module, no dependencies.
//
//   import { readFlags, seedVwoStorage } from "/static/vwo_heap/flags.js";
//   const flags = readFlags();                       // <script type="application/json" id="vwo-heap-flags">
//   if (flags.enabled("new_banner")) banner.textContent = flags.variable("new_banner", "text", "");
//   seedVwoStorage(flags);                           // before VWO's web SDK init(): its getFlag
//                                                    // then serves the server's variation

export const ELEMENT_ID = "vwo-heap-flags";
// Where VWO's web SDK keeps decisions: its clientStorage.key, default "vwo_fme_data" in the
// releases on npm (newer sources default to `fme_<accountId>_<base64 sdkKey>`: pass it as `key`).
export const VWO_STORAGE_KEY = "vwo_fme_data";

export function readFlags(elementId = ELEMENT_ID, root = document) {
  let data = {};
  const element = root.getElementById(elementId);
  try {
    data = element ? JSON.parse(element.textContent || "{}") : {};
  } catch (error) {
    data = {}; // not ours, or cut short: every flag off
  }
  const flags = data && typeof data.flags === "object" && data.flags ? data.flags : {};
  const flag = (key) => (Object.prototype.hasOwnProperty.call(flags, key) ? flags[key] : null);
  return {
    userId: data.userId ?? null,
    uuid: data.uuid ?? null,
    revision: data.revision ?? null,
    keys: () => Object.keys(flags),
    enabled: (key) => Boolean(flag(key)?.enabled),
    variation: (key) => flag(key)?.variation ?? null,
    variables: (key) => (flag(key)?.enabled ? { ...(flag(key).variables || {}) } : {}),
    variable(key, name, fallback = null) {
      const found = flag(key);
      const variables = found?.enabled ? found.variables || {} : {};
      return Object.prototype.hasOwnProperty.call(variables, name) ? variables[name] : fallback;
    },
    vwoStorage: data.vwo && typeof data.vwo === "object" ? data.vwo : {},
  };
}

export function seedVwoStorage(flags, { key = VWO_STORAGE_KEY, storage = globalThis.localStorage } = {}) {
  const entries = flags.vwoStorage || {};
  const count = Object.keys(entries).length;
  if (!storage || count === 0) return 0;
  let stored = {};
  try {
    stored = JSON.parse(storage.getItem(key) || "{}") || {};
  } catch (error) {
    stored = {};
  }
  storage.setItem(key, JSON.stringify(Object.assign(stored, entries)));
  return count;
}
