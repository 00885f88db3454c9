import java.io.File;
import java.math.BigDecimal;
import java.math.RoundingMode;
import java.time.Instant;
import java.util.Random;
import java.util.UUID;
import org.apache.avro.Conversions;
import org.apache.avro.Schema;
import org.apache.avro.data.TimeConversions;
import org.apache.avro.file.CodecFactory;
import org.apache.avro.file.DataFileWriter;
import org.apache.avro.generic.GenericData;
import org.apache.avro.generic.GenericDatumWriter;
import org.apache.avro.generic.GenericRecord;

/**
 * Writes EVENTS payments as a Java producer would: logical-type values (UUID, BigDecimal,
 * Instant) through the library's conversions, a deflate-compressed container. Seeded, so a
 * rerun writes the same records. Row 7 has no card id (a dead letter for `streamer score`);
 * every third row has no device id.
 */
public final class WriteContainer {
  static final int EVENTS = 60;
  static final String[] COUNTRIES = {"US", "GB", "DE", "FR", "NL"};
  static final String[] CURRENCIES = {"USD", "GBP", "EUR", "EUR", "EUR"};
  static final String[] MCCS = {"5411", "5812", "5541", "7995", "4829"};
  static final String[] CHANNELS = {"pos", "ecom", "atm", "moto"};

  public static void main(String[] args) throws Exception {
    Schema schema = new Schema.Parser().parse(new File(args[0]));
    GenericData model = new GenericData();
    model.addLogicalTypeConversion(new Conversions.UUIDConversion());
    model.addLogicalTypeConversion(new Conversions.DecimalConversion());
    model.addLogicalTypeConversion(new TimeConversions.TimestampMillisConversion());
    Random random = new Random(19);
    Instant start = Instant.parse("2026-11-30T12:00:00.123Z");
    try (DataFileWriter<GenericRecord> file = new DataFileWriter<>(new GenericDatumWriter<>(schema, model))) {
      file.setCodec(CodecFactory.deflateCodec(6));
      file.create(schema, new File(args[1]));
      for (int i = 0; i < EVENTS; i++) {
        int place = random.nextInt(COUNTRIES.length);
        String channel = CHANNELS[random.nextInt(CHANNELS.length)];
        boolean present = channel.equals("pos") || channel.equals("atm");
        BigDecimal exact = BigDecimal.valueOf(random.nextInt(500_000), 2).setScale(2, RoundingMode.UNNECESSARY);
        GenericRecord row = new GenericData.Record(schema);
        row.put("event_id", new UUID(random.nextLong(), random.nextLong()));
        row.put("card_id", i == 7 ? null : "card-" + random.nextInt(12));
        row.put("merchant_id", "m-" + random.nextInt(30));
        row.put("amount", exact.doubleValue());
        row.put("amount_exact", exact);
        row.put("currency", CURRENCIES[place]);
        row.put("country", COUNTRIES[place]);
        row.put("card_country", COUNTRIES[random.nextInt(COUNTRIES.length)]);
        row.put("mcc", MCCS[random.nextInt(MCCS.length)]);
        row.put("channel", channel);
        row.put("entry_mode", present ? "chip" : "manual");
        row.put("device_type", present ? "terminal" : "mobile");
        row.put("device_id", i % 3 == 0 ? null : "d-" + random.nextInt(1000));
        row.put("card_present", present);
        row.put("customer_tenure_days", random.nextInt(3650));
        row.put("event_time", start.plusMillis(37_000L * i + random.nextInt(1000)));
        file.append(row);
      }
    }
  }
}
