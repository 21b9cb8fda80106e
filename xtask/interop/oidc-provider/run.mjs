#!/usr/bin/env node
// authwire's CLI, as a user runs it, against oidc-provider on 127.0.0.1.
// Usage: node run.mjs /path/to/authwire        (cargo xtask interop does this)

import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { start, CLI_CLIENT, SERVICE_CLIENT, SERVICE_SECRET, USER } from './server.mjs';
import { runEnterprise } from './enterprise.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const bin = process.argv[2];
if (!bin) {
  console.error('usage: node run.mjs /path/to/authwire');
  process.exit(2);
}
const { issuer, close } = await start();
const home = mkdtempSync(join(tmpdir(), 'authwire-interop-'));
let failures = 0;

function authwire(args, env = {}) {
  return new Promise((resolve) => {
    const child = spawn(bin, args, {
      env: {
        PATH: process.env.PATH,
        HOME: home,
        XDG_CONFIG_HOME: join(home, 'config'),
        XDG_CACHE_HOME: join(home, 'cache'),
        BROWSER: join(here, 'browser.mjs'),
        ...env,
      },
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => { stdout += d; });
    child.stderr.on('data', (d) => { stderr += d; });
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

function check(name, ok, detail = '') {
  console.log(`${ok ? 'PASS' : 'FAIL'}  ${name}${ok || !detail ? '' : `\n      ${detail.trim().split('\n').join('\n      ')}`}`);
  if (!ok) failures += 1;
}

async function introspect(token) {
  const res = await fetch(`${issuer}/token/introspection`, {
    method: 'POST',
    headers: {
      authorization: `Basic ${Buffer.from(`${SERVICE_CLIENT}:${SERVICE_SECRET}`).toString('base64')}`,
      'content-type': 'application/x-www-form-urlencoded',
    },
    body: new URLSearchParams({ token }),
  });
  return res.json();
}

function cachedRefreshToken() {
  const dir = join(home, 'cache', 'authwire', 'tokens');
  for (const f of readdirSync(dir)) {
    const found = readFileSync(join(dir, f), 'utf8').match(/"refresh_token"\s*:\s*"([^"]+)"/);
    if (found) return found[1];
  }
  return undefined;
}

const user = ['--issuer', issuer, '--client-id', CLI_CLIENT, '--scope', 'openid offline_access', '--cache', 'file', '--dpop'];
try {
  // 1. Browser login: authorization code + PKCE S256 + state + iss (RFC 9207); the token
  //    request carries a DPoP proof, answered first with use_dpop_nonce.
  const login = await authwire(['login', '--browser', '--prompt', 'consent', ...user]);
  check('login --browser --dpop (PKCE, state, iss, DPoP nonce at the token endpoint)', login.code === 0 && /with a refresh token/.test(login.stderr), login.stderr);

  // 2. A protected resource that verifies DPoP proofs and demands nonces: userinfo.
  for (const round of [1, 2]) {
    const me = await authwire(['curl', `${issuer}/me`, ...user]);
    let body = {};
    try { body = JSON.parse(me.stdout); } catch { /* checked below */ }
    check(`curl --dpop ${issuer}/me, request ${round} (proof with htm, htu, ath, nonce)`, me.code === 0 && body.sub === USER, me.stderr + me.stdout);
  }

  // 3. The token is DPoP-bound to the key kept in the cache.
  const t = await authwire(['token', '--json', ...user]);
  const token = JSON.parse(t.stdout || '{}');
  const info = await introspect(token.access_token || '');
  check('the access token is DPoP-bound (introspection: token_type DPoP, cnf.jkt)', t.code === 0 && token.token_type === 'DPoP' && info.active === true && info.token_type === 'DPoP' && typeof info.cnf?.jkt === 'string', JSON.stringify(info) + t.stderr);

  // 4. Refresh with the DPoP-bound, rotating refresh token.
  const refreshed = await authwire(['token', '--min-ttl', '2h', ...user]);
  check('token --min-ttl 2h refreshes with the bound refresh token (rotated)', refreshed.code === 0 && refreshed.stdout.trim() !== token.access_token, refreshed.stderr);
  const after = await authwire(['curl', `${issuer}/me`, ...user]);
  check('the refreshed token works at the resource', after.code === 0 && after.stdout.includes(USER), after.stderr);

  // 5. Logout revokes the refresh token at the server (RFC 7009).
  const rt = cachedRefreshToken();
  const logout = await authwire(['logout', ...user]);
  const rtInfo = rt ? await introspect(rt) : { active: 'no refresh token in the cache' };
  check('logout revokes the refresh token at the server', logout.code === 0 && /revoked at the server/.test(logout.stderr) && rtInfo.active === false, logout.stderr + JSON.stringify(rtInfo));

  // 6. A denied login is a clear error.
  const denied = await authwire(['login', '--browser', '--login-hint', 'deny', ...user]);
  check('a denied login exits 3 naming access_denied', denied.code === 3 && /access_denied/.test(denied.stderr), denied.stderr);

  // 7. A service: client credentials with DPoP, nonce at the token endpoint.
  const service = ['--issuer', issuer, '--client-id', SERVICE_CLIENT, '--cache', 'none', '--dpop'];
  const st = await authwire(['token', '--json', ...service], { AUTHWIRE_CLIENT_SECRET: SERVICE_SECRET });
  const stok = JSON.parse(st.stdout || '{}');
  const sinfo = await introspect(stok.access_token || '');
  check('client credentials with DPoP yield a bound token', st.code === 0 && sinfo.token_type === 'DPoP' && typeof sinfo.cnf?.jkt === 'string', st.stderr + JSON.stringify(sinfo));

  // 8. Secrets never on the terminal.
  const all = [login, t, refreshed, logout, denied].map((r) => r.stderr).join('\n');
  check('no token or code on stderr', !(token.access_token && all.includes(token.access_token)) && !(rt && all.includes(rt)) && !/code=/.test(all), all);

  // 9. Enterprise OAuth (issue 28): FAPI 2.0 and mutual TLS.
  await runEnterprise(authwire, check);
} finally {
  close();
  rmSync(home, { recursive: true, force: true });
}
console.log(failures === 0 ? 'interop with oidc-provider: all checks passed' : `interop with oidc-provider: ${failures} check(s) failed`);
process.exit(failures === 0 ? 0 : 1);
