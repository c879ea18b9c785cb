// A real OpenID Connect provider (node oidc-provider) for Gantry's single sign-on tests.
//
//   node tests/oidc/provider.js PORT      (or OIDC_PORT=PORT)
//
// Environment: OIDC_REDIRECT_URIS (comma-separated callbacks of the confidential client),
// OIDC_WEB_CLIENT_ID / OIDC_WEB_CLIENT_SECRET / OIDC_CLI_CLIENT_ID (defaults below).
// It listens on 127.0.0.1 only and is the issuer http://127.0.0.1:PORT.
//
// Clients: the confidential browser client (client_secret_basic, PKCE required, opaque access
// tokens that only reach userinfo), the public CLI client (device flow, auth method none), and
// `other-app`, a public client like the CLI one whose tokens Gantry must refuse. The public
// clients' access tokens are JWTs for a resource (resource indicators) whose audience is the
// client id, with preferred_username and groups added.
//
// Accounts: any login works (devInteractions: any password); login L is the account whose sub
// is L, with preferred_username L and no groups unless the test set them otherwise with
// `PUT /_test/accounts/L {"preferred_username", "groups", "name"}`.
// Keys: a new RSA signing key (with a new kid) at every start, so a restart rotates the keys.
import crypto from 'node:crypto';
import http from 'node:http';

import Provider from 'oidc-provider';

const port = Number(process.argv[2] || process.env.OIDC_PORT);
if (!port) {
  console.error('usage: node provider.js PORT');
  process.exit(2);
}
const issuer = `http://127.0.0.1:${port}`;
const webClient = process.env.OIDC_WEB_CLIENT_ID || 'gantry-web';
const webSecret = process.env.OIDC_WEB_CLIENT_SECRET || 'gantry-web-secret';
const cliClient = process.env.OIDC_CLI_CLIENT_ID || 'gantry-cli';
const redirectUris = (process.env.OIDC_REDIRECT_URIS || '').split(',').filter(Boolean);
const DEVICE_GRANT = 'urn:ietf:params:oauth:grant-type:device_code';

const overrides = new Map();

function account(login) {
  return {
    preferred_username: login, name: login, groups: [],
    email: `${login}@example.test`, ...(overrides.get(login) || {}), sub: login,
  };
}

function signingKey() {
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = privateKey.export({ format: 'jwk' });
  return { ...jwk, kid: crypto.randomBytes(8).toString('hex'), use: 'sig', alg: 'RS256' };
}

function publicClient(clientId) {
  return {
    client_id: clientId,
    grant_types: [DEVICE_GRANT],
    response_types: [],
    redirect_uris: [],
    token_endpoint_auth_method: 'none',
  };
}

const configuration = {
  clients: [
    {
      client_id: webClient,
      client_secret: webSecret,
      grant_types: ['authorization_code'],
      response_types: ['code'],
      redirect_uris: redirectUris,
      token_endpoint_auth_method: 'client_secret_basic',
    },
    publicClient(cliClient),
    publicClient('other-app'),
  ],
  pkce: { methods: ['S256'], required: () => true },
  jwks: { keys: [signingKey()] },
  cookies: { keys: [crypto.randomBytes(16).toString('hex')] },
  scopes: ['openid', 'offline_access', 'profile', 'email', 'groups'],
  claims: {
    openid: ['sub'],
    profile: ['preferred_username', 'name'],
    email: ['email'],
    groups: ['groups'],
  },
  // Logins map to accounts by the login typed; the sub is the account's own.
  async findAccount(ctx, id) {
    const claims = account(id);
    return { accountId: id, async claims() { return claims; } };
  },
  features: {
    devInteractions: { enabled: true },
    deviceFlow: { enabled: true },
    resourceIndicators: {
      enabled: true,
      // The browser client gets an opaque token for userinfo; the public clients a JWT.
      async defaultResource(ctx, client, oneOf) {
        if (oneOf) return oneOf;
        return client.clientId === webClient ? undefined : `urn:gantry:${client.clientId}`;
      },
      async useGrantedResource() { return true; },
      async getResourceServerInfo(ctx, resource, client) {
        return {
          scope: 'openid profile email groups',
          audience: client.clientId,
          accessTokenTTL: 600,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'RS256' } },
        };
      },
    },
  },
  async extraTokenClaims(ctx, token) {
    if (!token.accountId) return undefined;
    const { preferred_username, groups } = account(token.accountId);
    return { preferred_username, groups };
  },
  ttl: {
    AccessToken: 600, AuthorizationCode: 60, DeviceCode: 600, Grant: 3600,
    IdToken: 600, Interaction: 600, Session: 3600,
  },
};

const provider = new Provider(issuer, configuration);
const callback = provider.callback();

function admin(req, res) {
  const match = /^\/_test\/accounts\/([^/]+)$/.exec(req.url);
  if (req.method !== 'PUT' || !match) {
    res.writeHead(404).end();
    return;
  }
  let body = '';
  req.on('data', (chunk) => { body += chunk; });
  req.on('end', () => {
    overrides.set(decodeURIComponent(match[1]), JSON.parse(body || '{}'));
    res.writeHead(204).end();
  });
}

http.createServer((req, res) => (req.url.startsWith('/_test/') ? admin(req, res) : callback(req, res)))
  .listen(port, '127.0.0.1', () => console.log(`oidc test provider at ${issuer}`));
