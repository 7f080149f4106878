// A throwaway certificate authority made with the `openssl` command at test
// time (node:crypto parses certificates but cannot sign them): a CA, then
// server and client certificates it signs, as PEM files in a directory.

import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

export interface Issued {
  readonly certFile: string;
  readonly keyFile: string;
}

export interface TestCa extends Issued {
  readonly dir: string;
  /** A leaf certificate for `cn`; a server one carries localhost and 127.0.0.1 as names. */
  issue(name: string, cn: string, use: 'server' | 'client'): Issued;
}

const openssl = (cwd: string, args: readonly string[]): void => {
  execFileSync('openssl', args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
};

const EC = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];

export function makeTestCa(dir: string, name = 'ca'): TestCa {
  const certFile = join(dir, `${name}.crt`);
  const keyFile = join(dir, `${name}.key`);
  openssl(dir, [
    'req',
    '-x509',
    ...EC,
    '-keyout',
    keyFile,
    '-out',
    certFile,
    '-days',
    '2',
    '-subj',
    `/CN=Landfall test ${name}`,
    '-addext',
    'basicConstraints=critical,CA:TRUE',
    '-addext',
    'keyUsage=critical,keyCertSign,cRLSign',
  ]);
  return {
    dir,
    certFile,
    keyFile,
    issue(leaf, cn, use) {
      const leafCert = join(dir, `${leaf}.crt`);
      const leafKey = join(dir, `${leaf}.key`);
      const csr = join(dir, `${leaf}.csr`);
      const ext = join(dir, `${leaf}.ext`);
      writeFileSync(
        ext,
        use === 'server'
          ? 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n'
          : 'extendedKeyUsage=clientAuth\n',
      );
      openssl(dir, ['req', '-new', ...EC, '-keyout', leafKey, '-out', csr, '-subj', `/CN=${cn}`]);
      openssl(dir, [
        'x509',
        '-req',
        '-in',
        csr,
        '-CA',
        certFile,
        '-CAkey',
        keyFile,
        '-CAcreateserial',
        '-days',
        '1',
        '-out',
        leafCert,
        '-extfile',
        ext,
      ]);
      return { certFile: leafCert, keyFile: leafKey };
    },
  };
}
