/* Oblako's service worker (served by app/pwa.py at /sw.js, which fills in the two lists).
 *
 * It caches only the offline page and the static files that page needs, never a page or a file
 * with patient data: pages always come from the network, and when the network is down a page
 * the patient opens shows the offline page instead of the browser's error.
 */
"use strict";
var CACHE = "__CACHE__";
var ASSETS = __ASSETS__;
var OFFLINE = ASSETS[0];

self.addEventListener("install", function (event) {
  event.waitUntil(
    caches.open(CACHE)
      .then(function (cache) { return cache.addAll(ASSETS); })
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
      .then(function () { return self.clients.claim(); })
  );
});

self.addEventListener("fetch", function (event) {
  var request = event.request;
  if (request.method !== "GET") { return; }
  if (request.mode === "navigate") {
    event.respondWith(fetch(request).catch(function () {
      return caches.match(OFFLINE);
    }));
    return;
  }
  var url = new URL(request.url);
  if (url.origin === self.location.origin && ASSETS.indexOf(url.pathname) !== -1) {
    event.respondWith(caches.match(request).then(function (hit) {
      return hit || fetch(request);
    }));
  }
});
