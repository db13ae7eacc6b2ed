// roomcam's service worker: only for notifications. Android shows a page's
// notification only through a service worker (showNotification), and a tap
// on one should bring the viewer back, not open a second one. Nothing is
// cached: a live camera page is useless offline.
self.addEventListener('install', () => self.skipWaiting());
self.addEventListener('activate', (event) => event.waitUntil(self.clients.claim()));
self.addEventListener('notificationclick', (event) => {
  event.notification.close();
  const url = event.notification.data && event.notification.data.url;
  event.waitUntil((async () => {
    const pages = await self.clients.matchAll({ type: 'window', includeUncontrolled: true });
    const open = pages.find((c) => url && c.url === url) || pages[0];
    if (open && 'focus' in open) return open.focus();
    if (url && self.clients.openWindow) return self.clients.openWindow(url);
    return undefined;
  })());
});
