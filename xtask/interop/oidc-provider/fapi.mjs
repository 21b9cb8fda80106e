// oidc-provider in two enterprise configurations, over https on 127.0.0.1 with a throwaway CA
// (made with the openssl tool):
//
// - startFapi(): the FAPI 2.0 Security Profile as oidc-provider implements it (`fapi.profile:
//   '2.0'`): pushed authorization requests required (RFC 9126), PKCE S256, DPoP-bound tokens
//   with nonces (RFC 9449), private_key_jwt client authentication (ES256), ID tokens signed
//   ES256, `iss` in authorization responses (RFC 9207).
// - startMtls(): RFC 8705: tls_client_auth (subject DN) and self_signed_tls_client_auth at the
//   mtls_endpoint_aliases (a second listener that asks for client certificates), and
//   certificate-bound access tokens checked at the userinfo resource.

import https from 'node:https';
import { execFileSync } from 'node:child_process';
import { createPublicKey, generateKeyPairSync, randomBytes, X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Provider from 'oidc-provider';
import { interactions } from './server.mjs';

export const FAPI_CLIENT = 'interop-fapi';
export const MTLS_CLIENT = 'interop-mtls';
export const SELF_SIGNED_CLIENT = 'interop-self-signed';
export const MTLS_USER_CLIENT = 'interop-mtls-user';

/** A CA, a server certificate for 127.0.0.1, client certificates; files in a temp folder. */
export function makeCertificates() {
  const dir = mkdtempSync(join(tmpdir(), 'authwire-interop-pki-'));
  const ssl = (...args) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
  ssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=authwire interop CA');
  const issue = (stem, subject, ext) => {
    ssl('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', `${stem}.key`, '-out', `${stem}.csr`, '-subj', subject);
    writeFileSync(join(dir, `${stem}.ext`), ext);
    ssl('x509', '-req', '-in', `${stem}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', `${stem}.pem`, '-days', '2', '-extfile', `${stem}.ext`);
  };
  issue('server', '/CN=127.0.0.1', 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n');
  issue('laptop', '/CN=laptop', 'basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n');
  issue('intruder', '/CN=intruder', 'basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n');
  ssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', 'robot.key', '-out', 'robot.pem', '-days', '2', '-subj', '/CN=robot', '-addext', 'extendedKeyUsage=clientAuth');
  // The private_key_jwt key of the FAPI client, and another one.
  for (const name of ['client', 'other']) {
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    writeFileSync(join(dir, `${name}-jwt.key`), privateKey.export({ type: 'pkcs8', format: 'pem' }));
  }
  return { dir, path: (f) => join(dir, f), read: (f) => readFileSync(join(dir, f)) };
}

function publicJwk(privatePem) {
  return createPublicKey(privatePem).export({ format: 'jwk' });
}

function signingJwks() {
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  return { keys: [{ ...privateKey.export({ format: 'jwk' }), use: 'sig', alg: 'ES256', kid: 'es256-1' }] };
}

async function listen(options, handler) {
  const server = https.createServer(options, handler);
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return server;
}

const common = (pki) => ({
  findAccount: async (_ctx, id) => ({ accountId: id, claims: async () => ({ sub: id }) }),
  cookies: { keys: [randomBytes(32).toString('hex')] },
  interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
  jwks: signingJwks(),
  enabledJWA: { idTokenSigningAlgValues: ['ES256'], clientAuthSigningAlgValues: ['ES256'], dPoPSigningAlgValues: ['ES256'] },
  scopes: ['openid', 'offline_access'],
  ttl: { AccessToken: 3600, ClientCredentials: 3600 },
  pki,
});

/** FAPI 2.0: PAR required, DPoP, private_key_jwt. */
export async function startFapi(pki) {
  const tls = { key: pki.read('server.key'), cert: pki.read('server.pem') };
  const server = await listen(tls);
  const issuer = `https://127.0.0.1:${server.address().port}`;
  const { pki: _, ...config } = common(pki);
  const provider = new Provider(issuer, {
    ...config,
    clients: [{
      client_id: FAPI_CLIENT,
      application_type: 'native',
      token_endpoint_auth_method: 'private_key_jwt',
      token_endpoint_auth_signing_alg: 'ES256',
      jwks: { keys: [publicJwk(pki.read('client-jwt.key'))] },
      id_token_signed_response_alg: 'ES256',
      redirect_uris: ['http://127.0.0.1/callback'],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      dpop_bound_access_tokens: true,
    }],
    features: {
      devInteractions: { enabled: false },
      fapi: { enabled: true, profile: '2.0' },
      pushedAuthorizationRequests: { enabled: true, requirePushedAuthorizationRequests: true },
      dPoP: { enabled: true, nonceSecret: randomBytes(32), requireNonce: () => true },
      introspection: { enabled: true },
    },
    pkce: { required: () => true },
  });
  const counts = { par: 0, authorizations: 0 };
  provider.on('pushed_authorization_request.success', () => { counts.par += 1; });
  provider.on('authorization.accepted', () => { counts.authorizations += 1; });
  provider.on('server_error', (_ctx, err) => console.error('oidc-provider (FAPI) server_error:', err));
  const callback = provider.callback();
  const interact = interactions(provider);
  server.on('request', (req, res) => (req.url.startsWith('/interaction/') ? interact(req, res) : callback(req, res)));
  return { issuer, provider, counts, close: () => server.close() };
}

/** RFC 8705: tls_client_auth and self_signed_tls_client_auth, certificate-bound tokens. */
export async function startMtls(pki) {
  const tls = { key: pki.read('server.key'), cert: pki.read('server.pem') };
  const server = await listen(tls);
  // The mtls_endpoint_aliases: a listener that asks for a client certificate (any; the CA
  // check is certificateAuthorized's, per client).
  const mtls = await listen({ ...tls, requestCert: true, rejectUnauthorized: false, ca: pki.read('ca.pem') });
  const issuer = `https://127.0.0.1:${server.address().port}`;
  const aliases = `https://127.0.0.1:${mtls.address().port}`;
  const robot = new X509Certificate(pki.read('robot.pem'));
  const { pki: _, ...config } = common(pki);
  const peer = (ctx) => {
    const cert = ctx.socket.getPeerX509Certificate?.();
    return cert && cert.raw.length > 0 ? cert : undefined;
  };
  const provider = new Provider(issuer, {
    ...config,
    clients: [
      {
        client_id: MTLS_CLIENT,
        token_endpoint_auth_method: 'tls_client_auth',
        tls_client_auth_subject_dn: 'CN=laptop',
        id_token_signed_response_alg: 'ES256',
        tls_client_certificate_bound_access_tokens: true,
        grant_types: ['client_credentials'],
        response_types: [],
        redirect_uris: [],
      },
      {
        // A person's login through a client that authenticates with its certificate: the
        // code, the refresh and the userinfo request all over mutual TLS, the tokens bound.
        client_id: MTLS_USER_CLIENT,
        application_type: 'native',
        token_endpoint_auth_method: 'tls_client_auth',
        tls_client_auth_subject_dn: 'CN=laptop',
        tls_client_certificate_bound_access_tokens: true,
        id_token_signed_response_alg: 'ES256',
        grant_types: ['authorization_code', 'refresh_token'],
        response_types: ['code'],
        redirect_uris: ['http://127.0.0.1/callback'],
      },
      {
        client_id: SELF_SIGNED_CLIENT,
        token_endpoint_auth_method: 'self_signed_tls_client_auth',
        id_token_signed_response_alg: 'ES256',
        jwks: { keys: [{ ...robot.publicKey.export({ format: 'jwk' }), x5c: [robot.raw.toString('base64')] }] },
        tls_client_certificate_bound_access_tokens: true,
        grant_types: ['client_credentials'],
        response_types: [],
        redirect_uris: [],
      },
    ],
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      introspection: { enabled: true },
      mTLS: {
        enabled: true,
        certificateBoundAccessTokens: true,
        tlsClientAuth: true,
        selfSignedTlsClientAuth: true,
        getCertificate: peer,
        certificateAuthorized: (ctx) => ctx.socket.authorized === true,
        certificateSubjectMatches: (ctx, property, expected) => property === 'tls_client_auth_subject_dn'
          && peer(ctx)?.subject.split('\n').map((s) => s.trim()).join(',') === expected,
      },
    },
    clientAuthMethods: ['tls_client_auth', 'self_signed_tls_client_auth', 'client_secret_basic'],
    discovery: {
      mtls_endpoint_aliases: {
        token_endpoint: `${aliases}/token`,
        introspection_endpoint: `${aliases}/token/introspection`,
        userinfo_endpoint: `${aliases}/me`,
      },
    },
  });
  provider.on('server_error', (_ctx, err) => console.error('oidc-provider (mTLS) server_error:', err));
  const callback = provider.callback();
  const interact = interactions(provider);
  const route = (req, res) => (req.url.startsWith('/interaction/') ? interact(req, res) : callback(req, res));
  server.on('request', route);
  mtls.on('request', route);
  return { issuer, aliases, provider, close: () => { server.close(); mtls.close(); } };
}
