// The enterprise checks (issue 28): authwire's CLI against oidc-provider configured for the
// FAPI 2.0 Security Profile and for RFC 8705 mutual TLS (see fapi.mjs). Called by run.mjs.

import https from 'node:https';
import { createHash, X509Certificate } from 'node:crypto';
import { rmSync } from 'node:fs';
import { startFapi, startMtls, makeCertificates, FAPI_CLIENT, MTLS_CLIENT, MTLS_USER_CLIENT, SELF_SIGNED_CLIENT } from './fapi.mjs';
import { USER } from './server.mjs';

/** A request over https with the interop CA, optionally presenting a client certificate. */
function request(url, { method = 'GET', headers = {}, body, pki, cert }) {
  return new Promise((resolve, reject) => {
    const req = https.request(url, {
      method,
      headers,
      ca: pki.read('ca.pem'),
      ...(cert ? { cert: pki.read(`${cert}.pem`), key: pki.read(`${cert}.key`) } : {}),
    }, (res) => {
      let data = '';
      res.on('data', (d) => { data += d; });
      res.on('end', () => resolve({ status: res.statusCode, body: data }));
    });
    req.on('error', reject);
    if (body) req.write(body);
    req.end();
  });
}

/**
 * A protected resource as RFC 8705 section 4.2 describes one: it introspects the token (as the
 * mTLS client, over the aliases) and accepts it only from a connection that presents the
 * certificate the token is bound to.
 */
async function boundResource(mtls, pki) {
  const server = https.createServer({
    key: pki.read('server.key'), cert: pki.read('server.pem'), requestCert: true, rejectUnauthorized: false,
  }, async (req, res) => {
    const token = (req.headers.authorization || '').replace(/^Bearer /, '');
    const info = await request(`${mtls.aliases}/token/introspection`, {
      method: 'POST', pki, cert: 'laptop',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ token, client_id: MTLS_CLIENT }).toString(),
    });
    const claims = JSON.parse(info.body || '{}');
    const peer = req.socket.getPeerX509Certificate?.();
    const presented = peer && peer.raw.length ? createHash('sha256').update(peer.raw).digest('base64url') : undefined;
    const ok = claims.active === true && claims.cnf?.['x5t#S256'] && claims.cnf['x5t#S256'] === presented;
    res.statusCode = ok ? 200 : 401;
    res.end(JSON.stringify({ ok, bound: claims.cnf?.['x5t#S256'] ?? null }));
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { url: `https://127.0.0.1:${server.address().port}/data`, close: () => server.close() };
}

export async function runEnterprise(run, check) {
  const pki = makeCertificates();
  // The scripted browser (Node's fetch) trusts the interop CA too; a login that fails gives up
  // after a minute instead of waiting for a person.
  const authwire = (args) => run(args[0] === 'login' ? [...args, '--timeout', '60s'] : args, { NODE_EXTRA_CA_CERTS: pki.path('ca.pem') });
  const fapi = await startFapi(pki);
  const mtls = await startMtls(pki);
  const resource = await boundResource(mtls, pki);
  try {
    // FAPI 2.0: PAR (required by discovery, not asked for by a flag), PKCE, DPoP with nonces,
    // private_key_jwt (ES256) at the PAR and token endpoints, an ES256 ID token checked
    // against the JWKS with its nonce.
    const user = ['--issuer', fapi.issuer, '--client-id', FAPI_CLIENT, '--auth-method', 'private-key-jwt',
      '--private-key-file', pki.path('client-jwt.key'), '--scope', 'openid offline_access', '--dpop',
      '--cacert', pki.path('ca.pem'), '--cache', 'file'];
    const login = await authwire(['login', '--browser', '--prompt', 'consent', ...user]);
    check('FAPI 2.0: login --browser pushes its request (PAR required), private_key_jwt, DPoP, checked ID token',
      login.code === 0 && fapi.counts.par === 1 && /with a refresh token/.test(login.stderr), login.stderr + JSON.stringify(fapi.counts));
    const me = await authwire(['curl', `${fapi.issuer}/me`, ...user]);
    check('FAPI 2.0: a DPoP-bound request to userinfo', me.code === 0 && me.stdout.includes(USER), me.stderr + me.stdout);
    const t = await authwire(['token', '--json', '--min-ttl', '2h', ...user]);
    const tok = JSON.parse(t.stdout || '{}');
    check('FAPI 2.0: a refresh with private_key_jwt and DPoP yields a bound token', t.code === 0 && tok.token_type === 'DPoP', t.stderr);
    const wrongKey = user.map((a) => (a === pki.path('client-jwt.key') ? pki.path('other-jwt.key') : a));
    const before = fapi.counts.par;
    const refused = await authwire(['login', '--browser', ...wrongKey]);
    check('FAPI 2.0: a client assertion signed with the wrong key is refused at the PAR endpoint, before any browser',
      refused.code === 3 && /invalid_client/.test(refused.stderr) && fapi.counts.par === before, refused.stderr);

    // RFC 8705: tls_client_auth at the aliases, a certificate-bound token, used with and
    // without its certificate.
    const cert = (name) => ['--cert', pki.path(`${name}.pem`), '--key', pki.path(`${name}.key`)];
    const service = ['--issuer', mtls.issuer, '--client-id', MTLS_CLIENT, '--auth-method', 'tls-client-auth',
      '--cacert', pki.path('ca.pem'), '--cache', 'none'];
    const bound = await authwire(['curl', resource.url, ...service, ...cert('laptop')]);
    const laptop = createHash('sha256').update(new X509Certificate(pki.read('laptop.pem')).raw).digest('base64url');
    check('mTLS: tls_client_auth, and curl presents the certificate the token is bound to',
      bound.code === 0 && JSON.parse(bound.stdout || '{}').bound === laptop, bound.stderr + bound.stdout);
    const st = await authwire(['token', ...service, ...cert('laptop')]);
    const stolen = await request(resource.url, { pki, headers: { authorization: `Bearer ${st.stdout.trim()}` } });
    check('mTLS: the bound token without its certificate is refused by the resource', st.code === 0 && stolen.status === 401, st.stderr + stolen.body);
    const intruder = await authwire(['token', ...service, ...cert('intruder')]);
    check('mTLS: a certificate with another subject is refused (invalid_client)', intruder.code === 3 && /invalid_client/.test(intruder.stderr), intruder.stderr);
    const robotArgs = ['--issuer', mtls.issuer, '--client-id', SELF_SIGNED_CLIENT, '--auth-method', 'self-signed-tls-client-auth',
      '--cacert', pki.path('ca.pem'), '--cache', 'none'];
    const robot = await authwire(['token', ...robotArgs, ...cert('robot')]);
    check('mTLS: self_signed_tls_client_auth with the registered certificate', robot.code === 0 && robot.stdout.trim().length > 0, robot.stderr);
    const notRegistered = await authwire(['token', ...robotArgs, ...cert('laptop')]);
    check('mTLS: self_signed_tls_client_auth with another certificate is refused', notRegistered.code === 3 && /invalid_client/.test(notRegistered.stderr), notRegistered.stderr);

    // A person's login, a refresh and a bound request, all with tls_client_auth.
    const person = ['--issuer', mtls.issuer, '--client-id', MTLS_USER_CLIENT, '--auth-method', 'tls-client-auth',
      '--scope', 'openid offline_access', '--cacert', pki.path('ca.pem'), '--cache', 'file', ...cert('laptop')];
    const mlogin = await authwire(['login', '--browser', '--prompt', 'consent', ...person]);
    check('mTLS: login --browser with tls_client_auth (the code redeemed at the alias), checked ID token',
      mlogin.code === 0 && /with a refresh token/.test(mlogin.stderr), mlogin.stderr);
    const mrefresh = await authwire(['token', '--min-ttl', '2h', ...person]);
    const mme = await authwire(['curl', `${mtls.aliases}/me`, ...person]);
    check('mTLS: a refresh at the alias, then a certificate-bound request to userinfo',
      mrefresh.code === 0 && mme.code === 0 && mme.stdout.includes(USER), mrefresh.stderr + mme.stderr + mme.stdout);

    const all = [login, me, t, bound, st, robot, mlogin, mrefresh, mme].map((r) => r.stderr).join('\n');
    check('enterprise: no token on stderr', !(tok.access_token && all.includes(tok.access_token)) && !all.includes(st.stdout.trim()), all);
  } finally {
    resource.close();
    fapi.close();
    mtls.close();
    rmSync(pki.dir, { recursive: true, force: true });
  }
}
