using System.Reflection;

namespace LiveDlrm.Cli;

public static class Program
{
    public static IReadOnlyList<ICommand> Commands { get; } = typeof(Program).Assembly.GetTypes()
        .Where(t => typeof(ICommand).IsAssignableFrom(t) && t is { IsAbstract: false, IsInterface: false })
        .Select(t => (ICommand)Activator.CreateInstance(t)!)
        .OrderBy(c => c.Name, StringComparer.Ordinal)
        .ToList();

    public static int Main(string[] args)
    {
        if (args.Length == 0 || args[0] is "--help" or "-h" or "help")
        {
            PrintHelp(Console.Out);
            return args.Length == 0 ? 2 : 0;
        }
        if (args[0] is "--version")
        {
            Console.WriteLine(typeof(Program).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion ?? "unknown");
            return 0;
        }
        var command = Commands.FirstOrDefault(c => c.Name == args[0]);
        if (command is null)
        {
            Console.Error.WriteLine($"livedlrm: unknown command '{args[0]}' (see livedlrm --help)");
            return 2;
        }
        if (args.Skip(1).Any(a => a is "--help" or "-h"))
        {
            Console.WriteLine($"livedlrm {command.Name} — {command.Summary}");
            Console.WriteLine(command.Usage);
            return 0;
        }
        try
        {
            return command.Run(new CommandArgs(args.Skip(1)));
        }
        catch (UsageException e)
        {
            Console.Error.WriteLine($"livedlrm {command.Name}: {e.Message}");
            return 2;
        }
    }

    static void PrintHelp(TextWriter w)
    {
        w.WriteLine("livedlrm — DLRM inference that stays fresh (in-process LoRA adapters on the embedding tables)");
        w.WriteLine();
        w.WriteLine("usage: livedlrm COMMAND [options]     livedlrm COMMAND --help");
        w.WriteLine();
        int width = Commands.Max(c => c.Name.Length);
        foreach (var c in Commands) w.WriteLine($"  {c.Name.PadRight(width)}  {c.Summary}");
    }
}
