// Print N free loopback TCP ports (space separated), all held open at once so they are distinct.
import net from "node:net";
const n = Number(process.argv[2] || 1);
const servers = await Promise.all(Array.from({ length: n }, () => new Promise((ok, ko) => {
  const s = net.createServer(); s.once("error", ko); s.listen(0, "127.0.0.1", () => ok(s));
})));
console.log(servers.map((s) => s.address().port).join(" "));
await Promise.all(servers.map((s) => new Promise((ok) => s.close(ok))));
