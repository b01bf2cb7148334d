/* Oblako's service worker (served by app/pwa.py at /sw.js, which fills in the cache's name and
 * the offline page's address).
 *
 * It caches one thing: the offline page (self-contained, the same for everyone). Never a page
 * or a file with patient data: pages always come from the network, and when the network is
 * down a page the patient opens shows the offline page instead of the browser's error.
 * Only page loads reach this code: where the browser can route requests (Static Routing API),
 * scripts, styles, uploads and the room's socket go straight to the network, as without a
 * worker; page loads start on the network while the worker wakes up (navigation preload).
 */
"use strict";
var CACHE = "__CACHE__";
var OFFLINE = "__OFFLINE__";

self.addEventListener("install", function (event) {
  if (event.addRoutes) {
    try {
      event.addRoutes(["same-origin", "no-cors", "cors"].map(function (mode) {
        return { condition: { requestMode: mode }, source: "network" };
      }));
    } catch (e) { /* an older browser: the fetch handler below passes them on */ }
  }
  event.waitUntil(
    caches.open(CACHE)
      .then(function (cache) { return cache.add(OFFLINE); })
      .then(function () { return self.skipWaiting(); })
  );
});

self.addEventListener("activate", function (event) {
  event.waitUntil(
    caches.keys()
      .then(function (keys) {
        return Promise.all(keys.filter(function (key) {
          return key !== CACHE && key.indexOf("oblako-offline") === 0;
        }).map(function (key) { return caches.delete(key); }));
      })
      .then(function () {
        return self.registration.navigationPreload && self.registration.navigationPreload.enable();
      })
      .then(function () { return self.clients.claim(); })
  );
});

self.addEventListener("fetch", function (event) {
  if (event.request.mode !== "navigate" || event.request.method !== "GET") { return; }
  event.respondWith(
    Promise.resolve(event.preloadResponse)
      .then(function (preloaded) { return preloaded || fetch(event.request); })
      .catch(function () { return caches.match(OFFLINE); })
  );
});
