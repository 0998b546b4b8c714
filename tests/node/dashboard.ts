/**
 * The dashboard's type: Grafana's published dashboard schema (`Dashboard` from @grafana/schema)
 * as a JSON file can spell it.
 *
 * The schema types some fields as TypeScript string enums (FieldColorModeId, ThresholdsMode,
 * MappingType, ...). No JSON value is assignable to an enum member, so `JsonOf` replaces each
 * enum by the union of its values (`"palette-classic" | "thresholds" | ...`) and keeps
 * everything else: required keys, value types, literal unions such as a variable's `type`.
 * generated/dashboard.ts (written by generate.mjs) holds the dashboard JSON as a literal that
 * must satisfy this type, so tsc also rejects unknown keys and values outside the enums; a plain
 * `import ... from "x.json"` would widen every string to `string` and check neither.
 */
import type { Dashboard } from '@grafana/schema';

type JsonOf<T> = T extends string
  ? string extends T
    ? string
    : `${T}`
  : T extends ReadonlyArray<infer U>
    ? Array<JsonOf<U>>
    : T extends object
      ? { [K in keyof T]: JsonOf<T[K]> }
      : T;

export type DashboardJson = JsonOf<Dashboard>;
