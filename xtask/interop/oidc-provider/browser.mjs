#!/usr/bin/env node
// A scripted browser for `BROWSER=`: follows the authorization URL through the server's
// redirects (keeping its cookies) until it reaches the client's loopback callback, and
// delivers that. It never reads the code itself.

const jar = new Map();
let url = process.argv[2];
for (let hops = 0; hops < 20; hops += 1) {
  const u = new URL(url);
  const headers = {};
  if (jar.size) headers.cookie = [...jar].map(([k, v]) => `${k}=${v}`).join('; ');
  const res = await fetch(url, { redirect: 'manual', headers });
  for (const c of res.headers.getSetCookie()) {
    const [pair] = c.split(';');
    const i = pair.indexOf('=');
    jar.set(pair.slice(0, i), pair.slice(i + 1));
  }
  if (u.pathname === '/callback') {
    process.stderr.write(`browser: the client answered ${res.status}\n`);
    process.exit(res.ok ? 0 : 1);
  }
  const next = res.headers.get('location');
  if (!next) {
    process.stderr.write(`browser: ${u.origin}${u.pathname} answered ${res.status} without a redirect: ${await res.text()}\n`);
    process.exit(1);
  }
  url = new URL(next, url).toString();
}
process.stderr.write('browser: too many redirects\n');
process.exit(1);
