/**
 * Board inventory from systeminformation: cores, memory, NICs, temperatures where the hardware has
 * sensors. Read-only. systeminformation (~4 MB of heap and code) is loaded at the first call, not
 * by every process that imports this module: an idle controller never asks.
 */

export interface BoardInventory {
  hostname: string;
  cpu: { model: string; cores: number; physicalCores: number; speedGHz: number };
  memory: { totalMb: number; freeMb: number; availableMb: number };
  nics: Array<{ name: string; mac: string; ipv4: string; operstate: string; speedMbps: number | null; virtual: boolean }>;
  temperatures: { mainC: number | null; coresC: number[] };
  os: { distro: string; release: string; kernel: string };
}

export async function readInventory(): Promise<BoardInventory> {
  const { default: si } = await import('systeminformation');
  const [cpu, mem, nics, temp, os] = await Promise.all([
    si.cpu(), si.mem(), si.networkInterfaces(), si.cpuTemperature(), si.osInfo(),
  ]);
  const nicList = Array.isArray(nics) ? nics : [nics];
  const mb = (b: number) => Math.round(b / 1048576);
  return {
    hostname: os.hostname,
    cpu: { model: `${cpu.manufacturer} ${cpu.brand}`.trim(), cores: cpu.cores, physicalCores: cpu.physicalCores, speedGHz: cpu.speed },
    memory: { totalMb: mb(mem.total), freeMb: mb(mem.free), availableMb: mb(mem.available) },
    nics: nicList.map((n) => ({
      name: n.iface, mac: n.mac, ipv4: n.ip4, operstate: n.operstate, speedMbps: n.speed ?? null, virtual: n.virtual,
    })),
    temperatures: { mainC: temp.main ?? null, coresC: temp.cores ?? [] },
    os: { distro: os.distro, release: os.release, kernel: os.kernel },
  };
}
