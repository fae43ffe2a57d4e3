// A temporary directory for one test file, removed when the file's tests are done, and a writer
// of numbered files in it.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after } from 'node:test';

export function tempDir(prefix: string): { dir: string; file: (text: string, ext?: string) => string } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  after(() => fs.rmSync(dir, { recursive: true, force: true }));
  let n = 0;
  return {
    dir,
    /** writes `text` to a fresh file and returns its absolute path */
    file(text: string, ext = '.yaml'): string {
      const f = path.join(dir, `c${n++}${ext}`);
      fs.writeFileSync(f, text);
      return f;
    },
  };
}
