// panva's oidc-provider (OpenID Certified), configured as strictly as it goes for what authwire
// does: PKCE required, DPoP with nonces required at the token endpoint and at the userinfo
// endpoint (a protected resource that verifies every proof: htm, htu, ath, jti, iat, nonce),
// RFC 9207 `iss` in authorization responses, refresh token rotation, revocation, introspection.
// There is no login page: /interaction/:uid approves at once (or denies, for login_hint=deny).

import http from 'node:http';
import { randomBytes } from 'node:crypto';
import Provider from 'oidc-provider';

export const CLI_CLIENT = 'interop-cli';
export const SERVICE_CLIENT = 'interop-service';
export const SERVICE_SECRET = 'interop-service-secret-0123456789';
export const USER = 'interop-user';

export async function start() {
  const server = http.createServer();
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const issuer = `http://127.0.0.1:${server.address().port}`;
  const provider = new Provider(issuer, {
    clients: [
      {
        client_id: CLI_CLIENT,
        application_type: 'native',
        token_endpoint_auth_method: 'none',
        // RFC 8252 section 7.3: any port on the loopback IP literal.
        redirect_uris: ['http://127.0.0.1/callback'],
        grant_types: ['authorization_code', 'refresh_token'],
        response_types: ['code'],
      },
      {
        client_id: SERVICE_CLIENT,
        client_secret: SERVICE_SECRET,
        grant_types: ['client_credentials'],
        response_types: [],
        redirect_uris: [],
      },
    ],
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      introspection: { enabled: true },
      revocation: { enabled: true },
      dPoP: { enabled: true, nonceSecret: randomBytes(32), requireNonce: () => true },
    },
    pkce: { required: () => true },
    scopes: ['openid', 'offline_access', 'api'],
    interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
    findAccount: async (_ctx, id) => ({ accountId: id, claims: async () => ({ sub: id }) }),
    cookies: { keys: [randomBytes(32).toString('hex')] },
    ttl: { AccessToken: 3600, ClientCredentials: 3600 },
  });
  provider.on('server_error', (_ctx, err) => console.error('oidc-provider server_error:', err));
  const callback = provider.callback();
  const interact = interactions(provider);
  server.on('request', (req, res) => (req.url.startsWith('/interaction/') ? interact(req, res) : callback(req, res)));
  return { issuer, provider, close: () => server.close() };
}

/**
 * The interaction pages: no login page, every interaction approved at once for the interop
 * user (at the first `acr_values` class asked for), or denied for `login_hint=deny`.
 */
export function interactions(provider) {
  return async (req, res) => {
    try {
      const details = await provider.interactionDetails(req, res);
      let result;
      if (details.params.login_hint === 'deny') {
        result = { error: 'access_denied', error_description: 'the interop user said no' };
      } else if (details.prompt.name === 'login') {
        result = { login: { accountId: USER, acr: details.params.acr_values?.split(' ')[0] } };
      } else {
        const grant = details.grantId
          ? await provider.Grant.find(details.grantId)
          : new provider.Grant({ accountId: details.session.accountId, clientId: details.params.client_id });
        const missing = details.prompt.details;
        if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
        if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
        for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes || {})) {
          grant.addResourceScope(indicator, scopes.join(' '));
        }
        result = { consent: { grantId: await grant.save() } };
      }
      await provider.interactionFinished(req, res, result, { mergeWithLastSubmission: true });
    } catch (e) {
      res.statusCode = 500;
      res.end(String(e));
    }
  };
}
