const body = JSON.stringify({
  event: 'lead.created',
  source: 'my-crm',
  idempotency_key: 'lead.created:lead_123',
  contact: {
    name: 'Alex',
    phone: '919999999999'
  },
  payload: {
    service: 'demo'
  }
});

const timestamp = Math.floor(Date.now() / 1000).toString();
const secret = '<integration-secret>';
const key = await crypto.subtle.importKey(
  'raw',
  new TextEncoder().encode(secret),
  { name: 'HMAC', hash: 'SHA-256' },
  false,
  ['sign']
);
const digest = await crypto.subtle.sign('HMAC', key, new TextEncoder().encode(`${timestamp}.${body}`));
const signature = [...new Uint8Array(digest)]
  .map((byte) => byte.toString(16).padStart(2, '0'))
  .join('');

await fetch('https://wapp.chat/api/whatsapp/automation/events', {
  method: 'POST',
  headers: {
    'Content-Type': 'application/json',
    'x-wappchat-key': '<integration-api-key>',
    'x-wappchat-timestamp': timestamp,
    'x-wappchat-signature': `sha256=${signature}`
  },
  body
});
