// GeoIP library: MaxMind DB lookups with reload on change. A leaf: imports nothing from edge/.
export { canonicalIp } from './address';
export {
  GeoDb, combineGeo, defaultCountryDbPath, geoInfoFromRecord, openGeoDatabases,
  DEFAULT_COUNTRY_DB_FILE, DEFAULT_COUNTRY_DB_PACKAGE, MAX_DB_BYTES,
  type GeoDbOptions, type GeoInfo, type GeoLookup, type OpenedGeo, type ReloadEvent,
} from './db';
