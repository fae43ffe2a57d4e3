// Destination classes by number prefix (issue 16): the dialled number is normalised to E.164
// (ITU-T E.164; the dial plan's international and national prefixes are rewritten to "+CC")
// and matched against the class prefixes, longest first.
import type { CacRules, DestClass } from './rules';

export interface Destination {
  /** normalised number ("+441234...", or the extension for internal), '' when not a number */
  readonly number: string;
  readonly cls: DestClass;
}

export interface Classifier { classify(user: string | undefined): Destination }

// RFC 3966 5.1.1: visual separators in a telephone-subscriber are not part of the number
const SEPARATORS = /[-.() ]/g;

export function compileClassifier(rules: CacRules): Classifier {
  const dp = rules.dialPlan;
  const emergency = new Set(dp.emergency);
  const premium = [...rules.classes.premium].sort((a, b) => b.length - a.length);
  const home = `+${dp.countryCode}`;
  function normalise(digits: string): string | null {
    if (digits.startsWith('+')) return /^\+[0-9]{1,15}$/.test(digits) ? digits : null;
    if (!/^[0-9]{1,20}$/.test(digits)) return null;
    if (dp.internationalPrefix !== '' && digits.startsWith(dp.internationalPrefix)) return `+${digits.slice(dp.internationalPrefix.length)}`;
    if (dp.nationalPrefix !== '' && digits.startsWith(dp.nationalPrefix)) return `${home}${digits.slice(dp.nationalPrefix.length)}`;
    return `${home}${digits}`;
  }
  return {
    classify(user) {
      if (user === undefined) return { number: '', cls: 'other' };
      let u: string;
      try { u = decodeURIComponent(user); } catch { u = user; }
      u = u.split(';')[0]!.replace(SEPARATORS, '');
      // emergency first, on the digits as dialled: never rewritten, never refused
      if (emergency.has(u)) return { number: u, cls: 'emergency' };
      if (/^[0-9]+$/.test(u) && u.length <= dp.internalMaxDigits) return { number: u, cls: 'internal' };
      const n = normalise(u);
      if (n === null) return { number: '', cls: 'other' };
      for (const p of premium) if (n.startsWith(p)) return { number: n, cls: 'premium' };
      return { number: n, cls: n.startsWith(home) ? 'national' : 'international' };
    },
  };
}

/** the group of a user (first group naming it, else 'default') */
export function compileGroups(rules: CacRules): (user: string) => { name: string; allow: ReadonlySet<DestClass> } {
  const byUser = new Map<string, { name: string; allow: ReadonlySet<DestClass> }>();
  let dflt: { name: string; allow: ReadonlySet<DestClass> } = { name: 'default', allow: new Set(['emergency', 'internal', 'national', 'international']) };
  for (const [name, g] of Object.entries(rules.groups)) {
    const v = { name, allow: new Set<DestClass>([...g.allow, 'emergency']) };
    if (name === 'default') dflt = v;
    for (const u of g.users ?? []) if (!byUser.has(u)) byUser.set(u, v);
  }
  return (user) => byUser.get(user) ?? dflt;
}
